"""Synthetic CPU contention for the benchmarks: ``--load N`` starts N busy processes of the benchmark's own.

The app's real home is a small CPU shared with other work (a laptop, a Streamlit Cloud container, a server with
several sessions), where thread pools that spin or oversubscribe collapse. Each worker is a pure-Python loop
(one core's worth of demand, no memory traffic to speak of), started with ``multiprocessing`` and always stopped:
at the end of the ``with`` block, at interpreter exit, and by themselves when the benchmark process dies. N is capped at 16.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import time
from typing import Callable, Iterator

from agegender.engines import threads as thread_policy

MAX_LOAD = 16


def _spin(stop, parent: int) -> None:  # pragma: no cover - runs in the child
    x = 0
    while not stop.is_set() and os.getppid() == parent:  # also ends if the benchmark is killed
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


@contextlib.contextmanager
def busy_load(n: int) -> Iterator[list]:
    """N busy processes for the duration of the block (none for n <= 0)."""
    n = max(0, min(int(n), MAX_LOAD))
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_spin, args=(stop, os.getpid()), daemon=True) for _ in range(n)]

    def shutdown() -> None:
        stop.set()
        for p in procs:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)

    atexit.register(shutdown)
    for p in procs:
        p.start()
    if procs:
        time.sleep(1.0)  # let them reach their loops before anything is timed
    try:
        yield procs
    finally:
        shutdown()
        atexit.unregister(shutdown)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_description() -> str:
    """The CPU's model name and the vector extensions that change onnxruntime's kernels (AVX2, AVX-512, VNNI, AMX):
    ratios from one machine carry over to another only with these beside them."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    named = [("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "VNNI"), ("avx_vnni", "AVX-VNNI"),
             ("amx_tile", "AMX")]
    extensions = [label for flag, label in named if flag in flags]
    return f"{model} ({', '.join(extensions) or 'no AVX2'})"


def one_worker_per_core(measure: Callable[[], float]) -> float:
    """``measure()`` with ``AGEGENDER_OVERSUBSCRIBE=1`` in effect: the default's alternative on a busy CPU
    (agegender.engines.threads.pass_width), measured beside it under the same load."""
    saved = thread_policy.OVERSUBSCRIBE
    thread_policy.OVERSUBSCRIBE = 1
    try:
        return measure()
    finally:
        thread_policy.OVERSUBSCRIBE = saved
