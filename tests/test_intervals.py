"""Confidence intervals of the headline numbers: known values, their place in every report, and the committed
reports' intervals recomputed from their own predictions."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest

from agegender.evaluation import compute_metrics
from agegender.evaluation.intervals import add_to_report, headline_intervals, mean_interval, wilson_interval
from agegender.evaluation.report import write_predictions, write_report
from agegender.paths import REPO_DIR


def _one_hot(ages):
    probs = np.zeros((len(ages), 101))
    probs[np.arange(len(ages)), np.clip(ages, 0, 100)] = 1.0
    return probs


def test_wilson_interval_known_values():
    # Textbook values (Wilson 1927; e.g. Newcombe 1998, table I): 0/100 -> [0, 3.70 %], 5/10 -> [23.7, 76.3 %].
    assert wilson_interval(0, 100) == pytest.approx([0.0, 0.0370], abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert wilson_interval(1949, 2078) == pytest.approx([0.9267, 0.9475], abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_bootstrap_interval_of_a_mean_matches_the_normal_theory_and_repeats():
    values = np.random.default_rng(3).exponential(4.5, 4000)
    low, high = mean_interval(values)
    half = 1.959964 * values.std(ddof=1) / math.sqrt(len(values))
    assert low < values.mean() < high
    assert low == pytest.approx(values.mean() - half, abs=0.03)
    assert high == pytest.approx(values.mean() + half, abs=0.03)
    assert mean_interval(values) == [low, high], "the bootstrap is seeded: same predictions, same interval"
    assert mean_interval(values[:1]) is None


def test_every_report_carries_the_intervals_of_its_headline_numbers():
    rng = np.random.default_rng(0)
    ages = rng.integers(1, 90, 400)
    predicted = np.clip(ages + rng.integers(-8, 9, 400), 0, 100)
    gender = rng.integers(0, 2, 400)
    p_female = np.where(rng.random(400) < 0.9, gender, 1 - gender).astype(float)  # ~90 % right
    metrics = compute_metrics(ages, gender, _one_hot(predicted), p_female)
    ci = metrics["intervals"]
    hits = int(((p_female >= 0.5) == gender).sum())
    assert ci["gender_accuracy"] == wilson_interval(hits, 400)
    assert ci["within_5"] == wilson_interval(int((np.abs(predicted - ages) <= 5).sum()), 400)
    for key, value in (("mae", metrics["mae"]), ("within_5", metrics["within_5"]),
                       ("gender_accuracy", metrics["gender_accuracy"]),
                       ("over_18", metrics["over_18"]["accuracy"])):
        assert ci[key][0] <= value <= ci[key][1], key
    # A larger sample measures the same rate more tightly.
    wide = headline_intervals(np.zeros(50), np.arange(50) % 10 != 0, np.ones(50, bool))["gender_accuracy"]
    tight = headline_intervals(np.zeros(5000), np.arange(5000) % 10 != 0, np.ones(5000, bool))["gender_accuracy"]
    assert tight[1] - tight[0] < (wide[1] - wide[0]) / 5


def test_intervals_are_added_to_a_written_report_only_when_its_predictions_reproduce_it(tmp_path):
    ages = np.array([5, 12, 17, 20, 25, 30, 41, 52, 63, 70] * 6)
    predicted = ages + np.tile([2, -3, 0, 6, -1, 1, 4, -7, 0, 2], 6)
    gender = np.arange(60) % 2
    p_female = np.where(np.arange(60) % 7 == 0, 1 - gender, gender) * 0.8 + 0.1
    metrics = compute_metrics(ages, gender, _one_hot(predicted), p_female)
    computed = metrics.pop("intervals")  # a report written before intervals existed
    write_report(metrics, tmp_path, "hand-made")
    rows = [{"file": f"{i}.jpg", "age": int(a), "gender": int(g), "race": -1, "detected": True,
             "pred_age": float(p), "p_female": float(f), "p_adult": float(p >= 18)}
            for i, (a, g, p, f) in enumerate(zip(ages, gender, predicted, p_female))]
    write_predictions(rows, tmp_path)
    assert "95 % CI" not in (tmp_path / "summary.md").read_text()
    assert add_to_report(tmp_path) == computed
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["metrics"]["intervals"] == computed
    low, high = computed["gender_accuracy"]
    assert f"(95 % CI {100 * low:.1f}–{100 * high:.1f} %)" in (tmp_path / "summary.md").read_text()

    rows[0]["p_female"] = 1.0 - rows[0]["p_female"]  # predictions that no longer give the report's numbers
    write_predictions(rows, tmp_path)
    with pytest.raises(ValueError, match="gender hits"):
        add_to_report(tmp_path)


def _evaluate_reports() -> list[str]:
    """Committed ``agegender evaluate`` reports (report.json with "metrics" beside predictions.csv); other tools'
    reports (e.g. ``agegender.evaluation.aflw``, which writes its own Wilson intervals) have another layout."""
    folders = [p for p in (REPO_DIR / "reports").glob("*") if (p / "report.json").is_file()
               and (p / "predictions.csv").is_file()]
    return sorted(p.name for p in folders if "metrics" in json.loads((p / "report.json").read_text()))


@pytest.mark.parametrize("folder", _evaluate_reports())
def test_committed_report_intervals_are_those_of_its_predictions(folder, tmp_path):
    committed = json.loads((REPO_DIR / "reports" / folder / "report.json").read_text())["metrics"]
    assert "intervals" in committed, f"{folder}: run python -m agegender.evaluation.intervals reports/{folder}"
    copy = tmp_path / folder
    copy.mkdir()
    for name in ("report.json", "predictions.csv"):
        shutil.copy(REPO_DIR / "reports" / folder / name, copy / name)
    assert add_to_report(copy) == committed["intervals"]
    with open(copy / "predictions.csv", newline="") as fh:
        assert sum(r["detected"] == "True" for r in csv.DictReader(fh)) == committed["n"]
