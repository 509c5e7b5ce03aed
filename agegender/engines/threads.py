"""How many threads one forward pass uses, and how many forward passes run at once in a process.

Measured on the 2-core machine (benchmarks/bench_inference.py, README *Benchmarks*): onnxruntime with 2
intra-op threads and spinning **off** is as fast as with spinning on when the CPU is idle and much faster when
other programs use the cores, because spinning threads burn the time slices the busy cores could give to the
one thread that has work. Several callers at once (Streamlit sessions, the live callback, a CLI batch) queue on
one process-wide semaphore instead of running side by side: two passes of 2 threads on 2 cores only
oversubscribe them, and a queue keeps each caller's latency predictable.

``AGEGENDER_THREADS`` overrides the intra-op threads (e.g. 1 on a container with one core).
"""

from __future__ import annotations

import os
import threading

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
    """Forward passes allowed at once in this process: as many as the cores can hold without oversubscription."""
    return max(1, cpu_count() // inference_threads())


INFERENCE_SLOTS = threading.BoundedSemaphore(concurrent_passes())
"""Held around every engine call (see the module docstring)."""
