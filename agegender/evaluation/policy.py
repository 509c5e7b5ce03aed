"""Measure the age-check rule of :mod:`agegender.assurance.age_check` on labelled faces, and choose its buffers.

For a threshold ``t`` and a buffer ``B`` the two errors that matter are asymmetric:

* **false pass**: a person under ``t`` passes. Reported over everyone under ``t`` and over the "near" band
  ``t - 5 … t - 1`` (for t = 18: the 13-17-year-olds, the people a check exists for); the band's rate comes
  with its count and a 95 % Wilson upper bound, because with a few hundred minors "0 %" still means "up to
  about 1-2 %".
* **asked for ID**: a person well above ``t`` is asked anyway. Reported over everyone ``>= t + B`` (what the
  buffer promises) and over everyone ``>= t + 7`` (a fixed reference group, "25 and over" at t = 18, so that
  buffers are compared on the same people).

:func:`choose_buffer` picks, per threshold, the smallest buffer whose near-band false pass is <= 1 %.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agegender.evaluation.intervals import wilson_interval

from agegender.assurance.age_check import passes

THRESHOLDS = (18, 21, 25)
BUFFERS = tuple(range(0, 21))  # beyond 20 years ("looks under 38" at t = 18) a check stops being a screen
NEAR_BAND = 5  # years under t that make up the "near" band
REFERENCE = 7  # the fixed group asked-for-ID is compared on: >= t + 7
MAX_FALSE_PASS = 0.01


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def wilson_upper(hits: int, n: int) -> float | None:
    """Upper end of the 95 % Wilson score interval of a rate ``hits / n``."""
    interval = wilson_interval(hits, n)
    return None if interval is None else interval[1]


def _rate(mask: np.ndarray, event: np.ndarray) -> dict[str, Any]:
    n, k = int(mask.sum()), int((mask & event).sum())
    return {"n": n, "count": k, "rate": _num(k / n) if n else None}


def policy_row(true_age: np.ndarray, age: np.ndarray, age_low: np.ndarray, threshold: int, buffer: int
               ) -> dict[str, Any]:
    """Both error rates of one (threshold, buffer) on one set of faces."""
    return rates_of_passes(true_age, np.asarray(passes(age, age_low, threshold, buffer), dtype=bool), threshold,
                           buffer)


def rates_of_passes(true_age: np.ndarray, ok: np.ndarray, threshold: int, buffer: int) -> dict[str, Any]:
    """:func:`policy_row` for any decision (``ok``: who passed), e.g. a panel of models that must all agree."""
    y = np.asarray(true_age)
    ok = np.asarray(ok, dtype=bool)
    near = _rate((y >= threshold - NEAR_BAND) & (y < threshold), ok)
    near["upper95"] = _num(wilson_upper(near["count"], near["n"]))
    return {
        "threshold": int(threshold), "buffer": int(buffer),
        "false_pass_under_t": _rate(y < threshold, ok),
        "false_pass_near": near,
        "asked_at_t_plus_buffer": _rate(y >= threshold + buffer, ~ok),
        "asked_reference": _rate(y >= threshold + REFERENCE, ~ok),
        "asked_adults_over_t": _rate(y >= threshold, ~ok),
    }


def policy_table(true_age: np.ndarray, age: np.ndarray, age_low: np.ndarray,
                 thresholds: Sequence[int] = THRESHOLDS, buffers: Sequence[int] = BUFFERS) -> list[dict[str, Any]]:
    """:func:`policy_row` for every threshold and buffer."""
    return [policy_row(true_age, age, age_low, t, b) for t in thresholds for b in buffers]


def choose_buffer(table: Sequence[dict[str, Any]], threshold: int, max_false_pass: float = MAX_FALSE_PASS
                  ) -> tuple[dict[str, Any] | None, bool]:
    """(row, meets_bar): the smallest buffer for ``threshold`` whose near-band false pass is <= ``max_false_pass``
    (asked-for-ID only grows with the buffer, so the smallest such buffer asks the fewest). If no buffer in the
    table meets the bar, the smallest buffer with the lowest near-band false pass, and ``meets_bar`` False: the
    caller must say so, not hide it."""
    rows = sorted((r for r in table if r["threshold"] == threshold and r["false_pass_near"]["rate"] is not None),
                  key=lambda r: r["buffer"])
    if not rows:
        return None, False
    for row in rows:
        if row["false_pass_near"]["rate"] <= max_false_pass:
            return row, True
    best = min(r["false_pass_near"]["rate"] for r in rows)
    return next(r for r in rows if r["false_pass_near"]["rate"] == best), False


def sliced_rows(true_age: np.ndarray, age: np.ndarray, age_low: np.ndarray, keys: np.ndarray,
                names: dict[Any, str], buffers: dict[int, int]) -> dict[str, list[dict[str, Any]]]:
    """Per slice (gender, race, dataset…): the policy rows at the chosen ``buffers`` (threshold -> buffer)."""
    keys = np.asarray(keys)
    out = {}
    for key, name in names.items():
        m = keys == key
        if m.any():
            out[name] = [policy_row(np.asarray(true_age)[m], np.asarray(age)[m], np.asarray(age_low)[m], t, b)
                         for t, b in buffers.items()]
    return out


def display_rows(table: Sequence[dict[str, Any]], threshold: int, buffers: Sequence[int] | None = None
                 ) -> list[dict[str, Any]]:
    """Flat rows of ``table`` for ``threshold`` (optionally only ``buffers``), for the app and the README: the
    false-pass rates as shares, with the near band's count, and the asked-for-ID shares."""
    out = []
    for r in table:
        if r["threshold"] != threshold or (buffers is not None and r["buffer"] not in buffers):
            continue
        near = r["false_pass_near"]
        out.append({
            "buffer": r["buffer"],
            f"false pass, ages {threshold - NEAR_BAND}-{threshold - 1}": near["rate"],
            "false passes / faces": f"{near['count']} / {near['n']}",
            "95 % upper bound": near["upper95"],
            f"false pass, all under {threshold}": r["false_pass_under_t"]["rate"],
            f"asked for ID, {threshold + REFERENCE}+": r["asked_reference"]["rate"],
            "asked for ID, ≥ t + buffer": r["asked_at_t_plus_buffer"]["rate"],
        })
    return out


def write_policy_csv(table: Sequence[dict[str, Any]], path: Path) -> None:
    """The policy table as CSV (``policy-validation.csv``, ``policy-test.csv``), one row per threshold and buffer."""
    fields = ["threshold", "buffer", "false_pass_under_t", "false_pass_near", "false_pass_near_n",
              "false_pass_near_upper95", "asked_at_t_plus_buffer", "asked_reference", "asked_adults_over_t"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(fields)
        for r in table:
            w.writerow([r["threshold"], r["buffer"], r["false_pass_under_t"]["rate"], r["false_pass_near"]["rate"],
                        r["false_pass_near"]["n"], r["false_pass_near"]["upper95"],
                        r["asked_at_t_plus_buffer"]["rate"], r["asked_reference"]["rate"],
                        r["asked_adults_over_t"]["rate"]])
