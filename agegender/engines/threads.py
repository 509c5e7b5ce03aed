"""How many threads one forward pass uses, and how many forward passes run at once in a process.

Measured on the 2-core machine (``benchmarks/bench_inference.py --load 2``, README *Benchmarks*): EfficientNet-Lite0
at batch 8 took 2.15 / 2.32 ms per view with 2 intra-op threads and spinning on / off on the idle CPU, but
4.96 / 4.21 ms with two busy processes beside it: spinning threads burn the time slices a shared CPU could give
to the one with work, so spinning is **off**. One thread: 4.2 ms either way. Two callers sharing one engine
(Streamlit sessions, the live callback, a CLI batch) took 2.34 ms per view queued one pass at a time and 2.35
side by side when idle, 4.60 and 3.89 under load: with spinning off, two passes at once do not hurt, so up to
one pass per core runs at once (a semaphore with ``cpu_count()`` slots, which also bounds the memory of many
simultaneous sessions); MediaPipe's detection takes a slot too.

``AGEGENDER_THREADS`` overrides the intra-op threads (e.g. 1 on a container with one core).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_DEFAULT_THREADS = 2


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, as in a container), not the host's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def inference_threads() -> int:
    """Intra-op threads per forward pass: ``AGEGENDER_THREADS`` or min(2, cores)."""
    raw = os.environ.get("AGEGENDER_THREADS", "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            pass
    return min(MAX_DEFAULT_THREADS, cpu_count())


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
    if len(items) <= 1 or concurrent_passes() <= 1 or getattr(_IN_POOL, "active", False):
        return [fn(x) for x in items]
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=concurrent_passes(), thread_name_prefix="agegender-pass",
                                       initializer=_mark_pool_thread)
        pool = _POOL
    return list(pool.map(fn, items))
