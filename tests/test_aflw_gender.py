"""Gender in the wild as the app reads it (``python -m agegender.evaluation.aflw``): real AFLW faces through the
bundled model, the committed split, the report's numbers recomputed from its rows."""

from __future__ import annotations

import json

import pytest

from agegender.evaluation.aflw import NAME, main, read_split, summarise, wilson
from conftest import data_path


def test_split_is_the_committed_one_and_disjoint():
    data_path(NAME, "labels.txt")
    parts = {s: read_split(s) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [1495, 750, 750]
    names = [{f.file for f in faces} for faces in parts.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert {f.gender for f in parts["test"]} == {0, 1} and {f.pose for f in parts["test"]} <= {1, 2, 3, 4, 5}


def test_bundled_model_reads_gender_on_wild_faces_and_the_report_adds_up(tmp_path):
    data_path(NAME, "images")
    out = tmp_path / "aflw"
    assert main(["--split", "val", "--limit", "40", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = (out / "predictions.csv").read_text().splitlines()[1:]
    assert report["all"]["n"] == len(rows) == 40
    assert report["all"]["accuracy"] >= 0.75  # the model reads gender on faces in the wild (val: ~89 % in training)
    assert report["detected"] >= 36  # framed by the detector, not the chip template, almost always
    k = sum(int(r.split(",")[4]) for r in rows)
    assert report["all"]["accuracy"] == round(k / 40, 4)
    assert sum(g["n"] for g in report["by_gender"].values()) == 40
    low, high = report["all"]["ci95"]
    assert low < report["all"]["accuracy"] < high


def test_summary_and_interval_on_known_rows():
    rows = [{"gender": i % 2, "pose": 3 if i < 6 else 1, "correct": int(i != 0), "detected": 1} for i in range(10)]
    s = summarise(rows)
    assert s["all"]["accuracy"] == 0.9 and s["by_pose"]["frontal"]["accuracy"] == pytest.approx(5 / 6, abs=1e-4)
    assert s["by_pose"]["left profile"]["n"] == 4 and s["by_gender"]["male"]["accuracy"] == 0.8
    low, high = wilson(9, 10)
    assert low == pytest.approx(0.596, abs=1e-3) and high == pytest.approx(0.982, abs=1e-3)
