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
  queued one pass at a time and 2.35 side by side when idle, 4.60 and 3.89 under load: so up to one pass per core
  runs at once (a semaphore with ``cpu_count()`` slots, which also bounds the memory of many simultaneous
  sessions); MediaPipe's detection passes take a slot too, and run on the same per-core workers.

``AGEGENDER_THREADS=k`` gives every pass k intra-op threads and stops the splitting (e.g. for a GPU-less server
that runs one request at a time on many cores).
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
    """Forward passes (and detections) allowed at once in this process: one per core (see the module docstring)."""
    return max(1, cpu_count())


INFERENCE_SLOTS = threading.BoundedSemaphore(concurrent_passes())
"""Held around every engine call (see the module docstring)."""


_POOL: "ThreadPoolExecutor | None" = None
_POOL_LOCK = threading.Lock()
_IN_POOL = threading.local()


def _mark_pool_thread() -> None:
    _IN_POOL.active = True


def in_pool() -> bool:
    """True inside one of :func:`parallel_map`'s workers (where a nested ``parallel_map`` runs inline)."""
    return bool(getattr(_IN_POOL, "active", False))


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]`` on the process-wide worker threads, one per core, results in order.

    For native calls that use one core each and release the GIL, e.g. the detector's MediaPipe passes: one
    BlazeFace call is single-threaded (4.4 ms wall = 4.3 ms CPU for a 512 px tile here), and two tasks side by side
    finish two calls in 4.6 ms. Items run inline when there is one core, one item, or when the caller is itself
    one of the workers (a nested call would wait on work queued behind it). The workers are shared by every
    caller in the process, so several sessions together still use at most one worker per core; each call inside
    takes an :data:`INFERENCE_SLOTS` slot as well.
    """
    items = list(items)
    if len(items) <= 1 or concurrent_passes() <= 1 or in_pool():
        return [fn(x) for x in items]
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=concurrent_passes(), thread_name_prefix="agegender-pass",
                                       initializer=_mark_pool_thread)
        pool = _POOL
    return list(pool.map(fn, items))
