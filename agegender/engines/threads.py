"""How many threads one forward pass uses, how a batch is spread over the cores, and how many passes run at once.

Measured on the 2-core machine (``benchmarks/bench_inference.py --load 2``, docs/performance.md *Benchmarks*):
- onnxruntime's own intra-op pool: EfficientNet-Lite0 at batch 8 took 2.15 / 2.32 ms per view with 2 threads and
  spinning on / off on the idle CPU, but 4.96 / 4.21 ms with two busy processes beside it: spinning threads burn
  the time slices a shared CPU could give to the one with work, so spinning is **off**.
- Better still is no intra-op pool at all: each forward pass runs on **one thread**, and a batch is split into
  one part per core that run side by side (:func:`batch_parts`, :func:`parallel_map`). The parts never wait for
  each other inside a layer (an intra-op pool meets at a barrier after every convolution, and on a shared CPU
  the pass waits for whichever thread was preempted). ``bald_guys.jpg`` end to end (144 views): 451 → 427 ms
  idle, 988 → 899 ms with two busy processes (alternating runs, 7 each).
- Two callers sharing one engine (Streamlit sessions, the live callback, a CLI batch) took 2.34 ms per view
  queued one pass at a time and 2.35 side by side when idle, 4.60 and 3.89 under load: so passes of several
  callers may run at once, up to a semaphore's slots (:data:`INFERENCE_SLOTS`, which also bounds the memory of
  many simultaneous sessions); MediaPipe's detection passes take a slot too, and run on the same workers.
- The kernel shares a busy CPU per runnable thread, so one worker per core beside two busy processes gets half of a
  2-core machine. A call that starts while at least as many other threads are runnable as there are cores
  (``/proc/loadavg``, less our own) runs **two workers per core** (:func:`pass_width`): its passes are independent
  chunks with no barrier, so the extra workers cost little and take a fairer share. Fresh processes alternating on
  the 2-core AMD EPYC Zen 5 beside two busy processes (medians of 4 rounds): ``bald_guys.jpg`` 292 → 232 ms,
  ``t1.jpg`` 82 → 70 ms, the astronaut 37 → 30 ms; idle, four workers would cost 8-15 %, and an idle call keeps
  one per core (135 against 135 ms; docs/performance.md).

``AGEGENDER_OVERSUBSCRIBE=1`` keeps one worker per core (:data:`OVERSUBSCRIBE`). ``AGEGENDER_THREADS=k`` gives
every pass k intra-op threads and stops the splitting (e.g. for a GPU-less server that runs one request at a time
on many cores).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def cpu_count() -> int:
    """Cores this process may use: ``AGEGENDER_CORES`` if set (a batch worker that owns one core of a machine it
    shares with other workers: :mod:`agegender.distributed`), else the affinity mask (as in a container), not the
    host's count."""
    raw = os.environ.get("AGEGENDER_CORES", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def inference_threads() -> int:
    """Intra-op threads per forward pass: ``AGEGENDER_THREADS``, else 1 (batches are split across cores instead)."""
    raw = os.environ.get("AGEGENDER_THREADS", "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            pass
    return 1


def batch_parts(n: int, threads: int = 1) -> list[slice]:
    """How a batch of ``n`` is split for single-threaded passes: one near-equal part per core (fewer for small
    batches: never an empty part); one part when each pass has intra-op threads of its own."""
    parts = 1 if threads > 1 else max(1, min(concurrent_passes(), n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def concurrent_passes() -> int:
    """Passes (forward passes and detections) one call runs side by side on an idle CPU: one per core."""
    return max(1, cpu_count())


def _oversubscribe() -> int:
    raw = os.environ.get("AGEGENDER_OVERSUBSCRIBE", "").strip()
    return max(1, int(raw)) if raw.isdigit() else 2


OVERSUBSCRIBE = _oversubscribe()
"""Workers per core for a call that starts while other work is runnable (:func:`pass_width`): 2, or
``AGEGENDER_OVERSUBSCRIBE`` read at import (1: one per core whatever the load, e.g. under a CPU quota, where more
threads buy no larger share)."""

INFERENCE_SLOTS = threading.BoundedSemaphore(concurrent_passes() * OVERSUBSCRIBE)
"""Held around every engine call: at most :data:`OVERSUBSCRIBE` passes per core at once in this process, however
many sessions call (see the module docstring; it also bounds their memory)."""


def _running(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            stat = fh.read()
    except OSError:  # the thread has ended
        return False
    return stat[stat.rindex(b")") + 2:][:1] == b"R"


def runnable_elsewhere(at_least: int = 1) -> int:
    """Threads runnable on this machine right now that are not this process's: ``/proc/loadavg``'s count of
    running threads less ours in state R (0 where it cannot be read). Ours are looked up (~10-15 µs a thread, the
    kernel's cost of a stat file) only when the count could reach ``at_least``; below that the count less one (the
    caller itself runs) is returned, an upper bound that already answers the caller's question. That skip matters:
    mid-``predict`` the count is often 2 (the caller and a worker finishing), and three scans of this process's
    ~21 threads had cost 1.4 ms per one-face photo."""
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    if running - 1 < max(1, at_least):
        return max(0, running - 1)
    try:
        ours = sum(_running(f"/proc/self/task/{tid}/stat") for tid in os.listdir("/proc/self/task"))
    except OSError:
        return 0
    return max(0, running - max(1, ours))


def pass_width() -> int:
    """Passes one call runs side by side now: one per core, or :data:`OVERSUBSCRIBE` per core when at least as
    many other threads are runnable as the machine has cores, i.e. when one worker per core would get half the CPU
    or less (a shared CPU; see the module docstring). Fewer others are not worth it: beside one busy process on two
    cores, two workers get 4/3 of a core and four would get 8/5, a gain about the size of what oversubscription
    costs on an idle CPU (8-15 %). A one-core worker (``AGEGENDER_CORES=1``, a batch actor) runs inline."""
    cores = concurrent_passes()
    if cores < 2 or OVERSUBSCRIBE < 2:
        return cores
    others_needed = os.cpu_count() or cores
    return cores * OVERSUBSCRIBE if runnable_elsewhere(others_needed) >= others_needed else cores


def handoff_width() -> int:
    """Passes one call runs side by side when each pass hands its work to other threads and waits: the MediaPipe
    detector's. :data:`OVERSUBSCRIBE` per core, idle or not (one per core on a one-core worker).

    Why: a MediaPipe call goes from our worker through the task's dispatcher thread to its graph threads and back, and
    while those hand-overs wake each other the core waits (19 % of the 2-core AMD EPYC Zen 5 sat idle through
    ``bald_guys.jpg``'s 33 calls on one worker per core). A second worker per core fills those waits: detection
    alternating in one process (20 rounds, idle), one / two workers per core, 21.4 / 19.1 ms on ``t1.jpg``, 7.9 / 7.1
    ms on the astronaut, 57.0 / 55.6 ms on ``bald_guys.jpg``, at the same CPU time (docs/performance.md). The network's
    passes run on one thread with no hand-overs, and keep :func:`pass_width`."""
    cores = concurrent_passes()
    return cores if cores < 2 else cores * OVERSUBSCRIBE


_POOL: "ThreadPoolExecutor | None" = None
_POOL_LOCK = threading.Lock()
_IN_POOL = threading.local()


def _mark_pool_thread() -> None:
    _IN_POOL.active = True


def in_pool() -> bool:
    """True inside one of :func:`parallel_map`'s workers (where a nested ``parallel_map`` runs inline)."""
    return bool(getattr(_IN_POOL, "active", False))


def parallel_map(fn: Callable[[T], R], items: Iterable[T], width: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on the process-wide worker threads, results in order.

    For native calls that use one core each and release the GIL, e.g. the detector's MediaPipe passes: one
    BlazeFace call is single-threaded (4.4 ms wall = 4.3 ms CPU for a 512 px tile here), and two tasks side by side
    finish two calls in 4.6 ms. :func:`pass_width` workers take the items in order, each the next one when it is
    done (a worker the OS preempts holds up only its own item). Items run inline when there is one core, one item,
    or when the caller is itself one of the workers (a nested call would wait on work queued behind it). The
    workers are shared by every caller in the process; each call inside takes an :data:`INFERENCE_SLOTS` slot too.
    ``width``: the caller's own :func:`pass_width` reading, when it has already split its work by it.
    """
    items = list(items)
    if width is None and len(items) <= concurrent_passes():
        width = len(items)  # no more workers than items whatever the load: no need to read it
    width = 1 if in_pool() else min(len(items), width or pass_width(), concurrent_passes() * OVERSUBSCRIBE)
    if width <= 1:
        return [fn(x) for x in items]
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=concurrent_passes() * OVERSUBSCRIBE,
                                       thread_name_prefix="agegender-pass", initializer=_mark_pool_thread)
        pool = _POOL
    results: list = [None] * len(items)
    queue = iter(enumerate(items))
    lock = threading.Lock()
    failed = threading.Event()

    def worker() -> None:
        while not failed.is_set():
            with lock:
                nxt = next(queue, None)
            if nxt is None:
                return
            try:
                results[nxt[0]] = fn(nxt[1])
            except BaseException:
                failed.set()  # the others stop taking items; the caller gets this exception
                raise

    for future in [pool.submit(worker) for _ in range(width)]:
        future.result()  # re-raises a worker's exception
    return results
