"""Calibrated age uncertainty: what the model's raw 101-bin distribution becomes before anyone reads it.

Why: measured on the validation splits, the raw distribution of the bundled model is over-confident, so its
"80 %" interval covers fewer than 80 % of faces and P(age >= t) is too close to 0 or 1 (reports/calibration-*).
An age check that trusts those numbers lets minors through. Two corrections, both fitted on validation only
(:mod:`agegender.evaluation.calibration`) and stored in the model's manifest entry under ``"calibration"``:

1. **Temperature** ``T``: the distribution becomes ``p ** (1 / T)`` renormalised (temperature scaling of the
   log-probabilities; ``T > 1`` widens it). ``T`` minimises the validation negative log-likelihood.
2. **Split-conformal interval per age region**: the reported interval is ``[Q(a_r), Q(b_r)]`` of the tempered
   distribution, where ``Q`` is its continuous quantile function and the CDF levels ``a_r``/``b_r`` of the
   region ``r`` of the *predicted* age are the conformal quantiles of the validation faces' PIT values
   (``F(true age)``), so that ``(1 - mass) / 2`` of faces fall below and above it in every region.

   Or, with ``regions_by = "candidate"`` (label-conditional, "Mondrian" conformal prediction, Vovk et al.), the
   regions are of the *true* age: the levels ``a_r``/``b_r`` are fitted on the validation faces whose true age is
   in region ``r``, and the interval is the hull of the candidate ages ``y`` with ``a_r(y) <= F(y) <= b_r(y)``.
   Why: a face whose true age is in a region is then inside its interval with the fitted probability whatever
   the model predicts for it, so the coverage holds per true-age decade, which is what a 15-year-old needs. With
   regions by predicted age, the model's regression to the mean puts teenagers into the 20s' region, whose levels
   were set by the 20-somethings, and the teenagers' coverage falls (test: 62 %).

The age axis is continuous here: bin ``k`` spreads uniformly over ``[k - 0.5, k + 0.5]``, so a face whose true
(whole-year) age is ``y`` is inside ``[low, high]`` exactly when ``a_r <= F(y) <= b_r``. Bounds are rounded to
0.1 year, the precision a :class:`~agegender.Face` reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from agegender.groups import NUM_AGE_BINS, expected_age

EPS = 1e-300  # log floor: far below any probability that matters, even after tempering
KNOTS = np.arange(NUM_AGE_BINS + 1, dtype=np.float64) - 0.5  # bin edges of the continuous age axis
REGIONS_BY = ("predicted", "candidate")


@dataclass(frozen=True)
class Calibration:
    """Parameters of :func:`apply_calibration` (the manifest's ``"calibration"`` entry, see :meth:`from_dict`).

    ``edges`` are the lower age edges of the regions (the first is 0); ``low_levels``/``high_levels`` the CDF
    levels of the interval ends in each region; ``regions_by`` says whose age picks the region: the face's
    ``"predicted"`` age, or each ``"candidate"`` age of the interval (label-conditional, see the module
    docstring). The identity calibration (``T = 1``, one region with levels 0.1/0.9) gives the raw central 80 %
    interval on the continuous axis.
    """

    temperature: float = 1.0
    edges: tuple[float, ...] = (0.0,)
    low_levels: tuple[float, ...] = (0.1,)
    high_levels: tuple[float, ...] = (0.9,)
    mass: float = 0.8
    fitted_on: str = ""
    regions_by: str = "predicted"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"calibration temperature must be > 0, not {self.temperature}")
        if not (len(self.edges) == len(self.low_levels) == len(self.high_levels) >= 1):
            raise ValueError("calibration needs as many low/high levels as region edges (at least one)")
        if self.regions_by not in REGIONS_BY:
            raise ValueError(f"calibration regions_by must be one of {REGIONS_BY}, not {self.regions_by!r}")
        if list(self.edges) != sorted(self.edges):
            raise ValueError(f"calibration region edges must be increasing: {self.edges}")
        for lo, hi in zip(self.low_levels, self.high_levels):
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"calibration levels must satisfy 0 <= low <= high <= 1, not {lo}, {hi}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        """From the manifest form ``{"temperature": T, "mass": 0.8, "regions": [{"from": 0, "low": a, "high":
        b}, ...], "fitted_on": ...}``; other keys (measurements) are kept in ``extra``."""
        regions = data.get("regions") or [{"from": 0, "low": 0.1, "high": 0.9}]
        known = {"temperature", "mass", "regions", "fitted_on", "regions_by"}
        return cls(temperature=float(data.get("temperature", 1.0)),
                   edges=tuple(float(r["from"]) for r in regions),
                   low_levels=tuple(float(r["low"]) for r in regions),
                   high_levels=tuple(float(r["high"]) for r in regions),
                   mass=float(data.get("mass", 0.8)), fitted_on=str(data.get("fitted_on", "")),
                   regions_by=str(data.get("regions_by", "predicted")),
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": round(self.temperature, 6), "mass": self.mass, "fitted_on": self.fitted_on,
                "regions_by": self.regions_by, "regions": [{"from": e, "low": round(lo, 6), "high": round(hi, 6)}
                            for e, lo, hi in zip(self.edges, self.low_levels, self.high_levels)], **self.extra}

    def region_of(self, age: np.ndarray) -> np.ndarray:
        """Index of the region of each ``age``."""
        return np.clip(np.searchsorted(np.asarray(self.edges), np.asarray(age), side="right") - 1, 0,
                       len(self.edges) - 1)


def temper(age_probs: np.ndarray, temperature: float) -> np.ndarray:
    """``p ** (1 / T)`` renormalised per row (works on (101,) or (N, 101)); ``T = 1`` returns a float copy."""
    probs = np.asarray(age_probs, dtype=np.float64)
    if temperature == 1.0:
        return probs / probs.sum(-1, keepdims=True)
    logp = np.log(np.maximum(probs, EPS)) / temperature
    logp -= logp.max(-1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(-1, keepdims=True)


def pit(age_probs: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """The continuous CDF at each whole-year ``age``: P(age < y) + P(age = y) / 2 (probability integral
    transform; a calibrated model's PIT values are uniform on [0, 1])."""
    probs = np.atleast_2d(np.asarray(age_probs, dtype=np.float64))
    y = np.clip(np.asarray(ages, dtype=np.int64).reshape(-1), 0, NUM_AGE_BINS - 1)
    cdf = np.cumsum(probs, axis=1)
    rows = np.arange(len(probs))
    return cdf[rows, y] - 0.5 * probs[rows, y]


def quantile(age_probs: np.ndarray, levels: np.ndarray | float) -> np.ndarray:
    """The continuous quantile of each row at its ``level`` (bin ``k`` uniform on [k - 0.5, k + 0.5])."""
    probs = np.atleast_2d(np.asarray(age_probs, dtype=np.float64))
    lv = np.broadcast_to(np.asarray(levels, dtype=np.float64), (len(probs),))
    cdf = np.concatenate([np.zeros((len(probs), 1)), np.cumsum(probs, axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    rows = np.arange(len(probs))
    j = np.clip((cdf < lv[:, None]).sum(axis=1), 1, NUM_AGE_BINS)  # cdf[j-1] < lv <= cdf[j]
    below, above = cdf[rows, j - 1], cdf[rows, j]
    width = above - below
    frac = np.divide(lv - below, width, out=np.zeros(len(probs)), where=width > 0)
    return KNOTS[j - 1] + np.clip(frac, 0.0, 1.0)


def apply_calibration(age_probs: np.ndarray, params: Calibration | Mapping[str, Any] | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibrated age_probs, interval low, interval high) for (N, 101) raw distributions.

    ``params`` is a :class:`Calibration`, its manifest dict, or ``None`` (identity: the raw distribution and its
    central interval of mass 0.8 on the continuous axis). The interval is widened to contain the expected age
    of the returned distribution (a two-peaked distribution's mean can lie outside it), then rounded to 0.1 y.
    """
    cal = params if isinstance(params, Calibration) else Calibration.from_dict(params or {})
    probs = temper(np.atleast_2d(age_probs), cal.temperature)
    ages = np.asarray(expected_age(probs)).reshape(-1)
    region = cal.region_of(ages)
    low = quantile(probs, np.asarray(cal.low_levels)[region])
    high = quantile(probs, np.asarray(cal.high_levels)[region])
    if cal.regions_by == "candidate":
        low, high = _candidate_hull(probs, cal, low, high)
    low, high = np.minimum(low, ages), np.maximum(high, ages)
    return probs, np.floor(low * 10 + 1e-6) / 10, np.ceil(high * 10 - 1e-6) / 10


def _candidate_hull(probs: np.ndarray, cal: Calibration, low: np.ndarray, high: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Hull of the label-conditional set: in region ``r`` (true ages ``[e_r, e_r+1)``, on the continuous axis
    ``[e_r - 0.5, e_r+1 - 0.5)``) the candidate ages with ``a_r <= F(y) <= b_r`` are ``[Q(a_r), Q(b_r)]``
    clipped to the region. Where no region keeps a candidate (a distribution far from every region's levels),
    ``low``/``high`` (the levels of the predicted age's region) stand."""
    bounds = [*(e - 0.5 for e in cal.edges), float(KNOTS[-1])]
    lo_all = np.full(len(probs), np.inf)
    hi_all = np.full(len(probs), -np.inf)
    for r, (a, b) in enumerate(zip(cal.low_levels, cal.high_levels)):
        piece_lo = np.maximum(quantile(probs, a), bounds[r])
        piece_hi = np.minimum(quantile(probs, b), bounds[r + 1])
        kept = piece_lo <= piece_hi
        lo_all = np.where(kept, np.minimum(lo_all, piece_lo), lo_all)
        hi_all = np.where(kept, np.maximum(hi_all, piece_hi), hi_all)
    found = np.isfinite(lo_all)
    return np.where(found, lo_all, low), np.where(found, hi_all, high)
