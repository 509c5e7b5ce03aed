"""From a 101-bin age distribution to what people read: expected age, an interval, P(age ≥ t), age groups.

Age groups are sums of bins, so every preset is a partition of 0 … 100 and group probabilities always sum to
1. Presets follow common benchmarks (FairFace, Adience) and plain-language life stages; custom lower edges
give any other grouping.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

NUM_AGE_BINS = 101
ADULT_AGE = 18
"""The age of majority that reports measure "over 18" against (the age check takes its own threshold)."""
AGES = np.arange(NUM_AGE_BINS, dtype=np.float64)


@dataclass(frozen=True)
class GroupPreset:
    """Named age groups; ``bins[i]`` is the index of the group that age ``i`` belongs to."""

    name: str
    labels: tuple[str, ...]
    bins: tuple[int, ...]

    @cached_property
    def matrix(self) -> np.ndarray:
        """(101, G) 0/1 matrix: ``age_probs @ matrix`` gives group probabilities (batched too). Built once per
        preset: it is used on every face of every frame."""
        m = np.zeros((NUM_AGE_BINS, len(self.labels)))
        m[np.arange(NUM_AGE_BINS), self.bins] = 1.0
        return m

    def group_of(self, age: float) -> str:
        return self.labels[self.bins[int(min(max(round(age), 0), NUM_AGE_BINS - 1))]]


def preset_from_edges(edges: Sequence[int], name: str = "custom", labels: Sequence[str] | None = None) -> GroupPreset:
    """Groups starting at each lower edge, e.g. ``[0, 13, 18, 65]`` → 0-12, 13-17, 18-64, 65+."""
    edges = sorted({int(e) for e in edges})
    if not edges or edges[0] != 0:
        edges = [0] + [e for e in edges if e > 0]
    if edges[-1] > 100:
        raise ValueError("age-group edges must lie within 0 … 100")
    auto = [f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    labels = tuple(labels) if labels is not None else tuple(auto)
    if len(labels) != len(edges):
        raise ValueError(f"{len(labels)} labels for {len(edges)} groups")
    bins = tuple(int(np.searchsorted(edges, age, side="right") - 1) for age in range(NUM_AGE_BINS))
    return GroupPreset(name=name, labels=labels, bins=bins)


def preset_from_ranges(name: str, ranges: Sequence[tuple[int, int | None]], labels: Sequence[str] | None = None) -> GroupPreset:
    """Groups given as inclusive (lo, hi) ranges that may leave gaps; an age in a gap joins the nearer group
    (ties go to the younger one). ``hi=None`` means "and older"."""
    labels = tuple(labels) if labels else tuple(f"{lo}-{hi}" if hi is not None else f"{lo}+" for lo, hi in ranges)
    bins = []
    for age in range(NUM_AGE_BINS):
        distances = [0 if lo <= age <= (hi if hi is not None else 10**9) else min(abs(age - lo), abs(age - (hi if hi is not None else lo)))
                     for lo, hi in ranges]
        bins.append(int(np.argmin(distances)))
    return GroupPreset(name=name, labels=labels, bins=tuple(bins))


PRESETS: dict[str, GroupPreset] = {
    "fairface9": preset_from_edges([0, 3, 10, 20, 30, 40, 50, 60, 70], "fairface9",
                                   ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]),
    "life4": preset_from_edges([0, 10, 20, 60], "life4",
                               ["child (0-9)", "adolescent (10-19)", "adult (20-59)", "senior (60+)"]),
    "bins10": preset_from_edges([0, 3, 7, 13, 18, 23, 27, 34, 45, 60], "bins10",
                                ["0-2", "3-6", "7-12", "13-17", "18-22", "23-26", "27-33", "34-44", "45-59", "60+"]),
    "adience8": preset_from_ranges("adience8", [(0, 2), (4, 6), (8, 13), (15, 20), (25, 32), (38, 43), (48, 53), (60, None)]),
}
DEFAULT_PRESET = "fairface9"


def get_preset(preset: str | GroupPreset | Sequence[int]) -> GroupPreset:
    """A preset by name, a :class:`GroupPreset`, or custom lower edges (``[0, 18, 65]`` or ``"0,18,65"``)."""
    if isinstance(preset, GroupPreset):
        return preset
    if isinstance(preset, str):
        if preset in PRESETS:
            return PRESETS[preset]
        try:
            return preset_from_edges([int(x) for x in preset.replace(" ", "").split(",") if x])
        except ValueError:
            raise ValueError(f"unknown age-group preset {preset!r}; use one of {', '.join(PRESETS)} "
                             "or comma-separated lower edges such as '0,13,18,65'") from None
    return preset_from_edges(list(preset))


def group_probs(age_probs: np.ndarray, preset: str | GroupPreset | Sequence[int] = DEFAULT_PRESET) -> "OrderedDict[str, float]":
    p = get_preset(preset)
    sums = np.asarray(age_probs, dtype=np.float64) @ p.matrix
    return OrderedDict((label, float(v)) for label, v in zip(p.labels, sums))


def expected_age(age_probs: np.ndarray) -> np.ndarray | float:
    """Mean of the distribution (works on (101,) or (N, 101))."""
    out = np.asarray(age_probs, dtype=np.float64) @ AGES
    return float(out) if np.ndim(out) == 0 else out


def age_quantile(age_probs: np.ndarray, q: float) -> float:
    """Smallest age whose cumulative probability reaches ``q``."""
    cdf = np.cumsum(np.asarray(age_probs, dtype=np.float64))
    return float(min(np.searchsorted(cdf, q * cdf[-1] - 1e-12), NUM_AGE_BINS - 1))


def age_interval(age_probs: np.ndarray, mass: float = 0.8) -> tuple[float, float]:
    """Central interval holding ``mass`` of the probability (10th-90th percentile for 80 %)."""
    tail = (1.0 - mass) / 2
    return age_quantile(age_probs, tail), age_quantile(age_probs, 1.0 - tail)


def p_at_least(age_probs: np.ndarray, threshold: float) -> np.ndarray | float:
    """P(age ≥ threshold). Bins are whole years: P(age ≥ 17.5) counts the 18-year bin onwards."""
    start = int(min(max(math.ceil(threshold), 0), NUM_AGE_BINS))
    out = np.asarray(age_probs, dtype=np.float64)[..., start:].sum(-1)
    return float(out) if np.ndim(out) == 0 else out
