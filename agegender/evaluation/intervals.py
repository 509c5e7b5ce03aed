"""95 % confidence intervals of a report's headline numbers: how far a test split's sampling noise alone can
move them.

A bar such as "gender ≥ 94 %" is met or missed on one finite test split; on ~2,000 faces an accuracy near 94 % is
known only to about ±1 point. Reports therefore carry each headline number with its interval, so a reader sees
whether a miss (or a pass) is larger than the noise. Accuracies get the Wilson score interval (scipy's
``binomtest(...).proportion_ci``: right near 0 and 1, where the normal approximation is not); the MAE, a mean of
skewed absolute errors, gets a seeded percentile bootstrap (``scipy.stats.bootstrap``), so the same predictions
always give the same interval. Both treat faces as independent draws, which duplicates or one person's several
photos would make optimistic (UTKFace is split by content hash, not by identity).

``python -m agegender.evaluation.intervals reports/eval-*`` adds the intervals to committed reports from their
``predictions.csv`` (checking first that the file reproduces the report's own counts) and rewrites
``summary.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.stats import binomtest, bootstrap

from agegender.groups import ADULT_AGE

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def wilson_interval(hits: int, n: int, confidence: float = CONFIDENCE) -> list[float] | None:
    """[low, high] of the Wilson score interval of the rate ``hits / n``; ``None`` when ``n`` is 0."""
    if n == 0:
        return None
    ci = binomtest(int(hits), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return [round(float(ci.low), 6), round(float(ci.high), 6)]


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE, seed: int = 0) -> list[float] | None:
    """[low, high] of a seeded percentile bootstrap of the mean of ``values``."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) < 2:
        return None
    result = bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                       method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return [round(low, 4), round(high, 4)] if math.isfinite(low) and math.isfinite(high) else None


def headline_intervals(err: np.ndarray, gender_ok: np.ndarray, adult_ok: np.ndarray,
                       confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Intervals of MAE, ±5 years, over/under-18 and gender accuracy from per-face errors and hits."""
    err = np.asarray(err, dtype=np.float64).reshape(-1)
    n = len(err)
    return {
        "confidence": confidence,
        "mae": mean_interval(np.abs(err), confidence),
        "within_5": wilson_interval(int((np.abs(err) <= 5).sum()), n, confidence),
        "over_18": wilson_interval(int(np.asarray(adult_ok, bool).sum()), n, confidence),
        "gender_accuracy": wilson_interval(int(np.asarray(gender_ok, bool).sum()), n, confidence),
        "method": "accuracies: Wilson score interval; MAE: percentile bootstrap of the mean absolute error "
                  f"({BOOTSTRAP_RESAMPLES} resamples, seed 0); faces treated as independent",
    }


def _from_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Errors and hits of the found faces in a report's ``predictions.csv``."""
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["detected"] == "True"]
    age = np.array([int(r["age"]) for r in rows], dtype=np.float64)
    err = np.array([float(r["pred_age"]) for r in rows]) - age
    gender_ok = (np.array([float(r["p_female"]) for r in rows]) >= 0.5) == np.array([int(r["gender"]) for r in rows])
    adult_ok = (np.array([float(r["p_adult"]) for r in rows]) >= 0.5) == (age >= ADULT_AGE)
    return err, gender_ok, adult_ok


def add_to_report(report_dir: Path) -> dict[str, Any]:
    """Add ``metrics["intervals"]`` to ``report_dir``'s report from its predictions; rewrite its summary.

    Refuses (ValueError) when the predictions do not reproduce the report's count, MAE (to the CSV's rounding)
    or hit counts: the interval must be of the numbers the report states."""
    from agegender.evaluation.report import summary_markdown

    report_path = report_dir / "report.json"
    report = json.loads(report_path.read_text())
    metrics = report["metrics"]
    err, gender_ok, adult_ok = _from_predictions(report_dir / "predictions.csv")
    checks = {
        "n": (len(err), metrics["n"]),
        "gender hits": (int(gender_ok.sum()), round(metrics["gender_accuracy"] * metrics["n"])),
        "over-18 hits": (int(adult_ok.sum()), round(metrics["over_18"]["accuracy"] * metrics["n"])),
    }
    for name, (got, stated) in checks.items():
        if got != stated:
            raise ValueError(f"{report_dir}: predictions.csv gives {name} {got}, the report says {stated}")
    if abs(float(np.abs(err).mean()) - metrics["mae"]) > 1e-3:
        raise ValueError(f"{report_dir}: predictions.csv gives MAE {np.abs(err).mean():.4f}, "
                         f"the report says {metrics['mae']}")
    metrics["intervals"] = headline_intervals(err, gender_ok, adult_ok)
    report_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (report_dir / "summary.md").write_text(summary_markdown(metrics, report["title"], report.get("extra")))
    return metrics["intervals"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agegender.evaluation.intervals", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="report folders holding report.json and "
                                                              "predictions.csv")
    args = parser.parse_args(argv)
    for folder in args.reports:
        try:
            ci = add_to_report(folder)
        except (OSError, KeyError, ValueError) as exc:
            print(f"{folder}: {exc}", file=sys.stderr)
            return 1
        print(f"{folder}: MAE {ci['mae']}, gender {ci['gender_accuracy']}, ±5 {ci['within_5']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
