"""``agegender check`` end to end in a subprocess: exit codes (0 all pass, 3 any needs ID, 1 errors), the JSON
schema, and that its decision is the library's ``Face.age_check`` (bundled model on skimage's astronaut)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agegender import Estimator
from agegender.assurance.age_check import default_buffer

from conftest import encode

DECISION_KEYS = {"passed", "decision", "threshold", "buffer", "p_at_least", "age", "age_low", "age_high",
                 "calibrated", "reason", "model", "opinions"}
RECORD_KEYS = {"file", "width", "height", "faces", "error", "decision", "summary"}


def check(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", "agegender", "check", *args], capture_output=True, text=True,
                          timeout=240, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def astronaut_file(tmp_path_factory, astronaut) -> Path:
    path = tmp_path_factory.mktemp("check") / "astronaut.png"
    path.write_bytes(encode(np.asarray(astronaut)))
    return path


@pytest.fixture(scope="module")
def library_face(astronaut):
    estimator = Estimator(scale_tta=False)
    try:
        faces = estimator.predict(np.asarray(astronaut))
    finally:
        estimator.close()
    assert len(faces) == 1
    return faces[0]


def test_adult_passes_at_18_and_json_matches_the_library(astronaut_file, library_face):
    proc = check(str(astronaut_file), "--min-age", "18", "--json", "--no-scale-tta", "--single-model")
    expected = library_face.age_check(18)
    assert proc.returncode == (0 if expected.passed else 3), proc.stderr
    records = json.loads(proc.stdout)
    assert len(records) == 1 and set(records[0]) == RECORD_KEYS
    rec = records[0]
    assert rec["error"] is None and rec["width"] == 512 and len(rec["faces"]) == 1
    decision = rec["faces"][0]["age_check"]
    assert set(decision) == DECISION_KEYS
    assert decision["passed"] == expected.passed and decision["buffer"] == default_buffer(18)
    assert decision["age"] == pytest.approx(library_face.age, abs=0.05)
    assert decision["age_low"] == pytest.approx(library_face.age_low, abs=0.05)
    assert decision["p_at_least"] == pytest.approx(library_face.p_at_least(18), abs=1e-3)
    assert decision["calibrated"] is True  # the bundled model ships its calibration
    assert decision["model"] == library_face.model and decision["opinions"] == []  # one model, no panel
    assert rec["decision"] == ("pass" if expected.passed else "ask_for_id")


def test_threshold_above_the_estimate_asks_for_id(astronaut_file, library_face):
    t = int(library_face.age) + 1
    proc = check(str(astronaut_file), "--min-age", str(t), "--buffer", "0", "--no-scale-tta")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "ASK FOR ID" in proc.stdout and "1 of 1 needs ID" in proc.stdout


def test_unreadable_file_is_an_error_and_wins_over_pass(astronaut_file, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    proc = check(str(astronaut_file), str(bad), "--min-age", "0", "--buffer", "0", "--json", "--no-scale-tta")
    assert proc.returncode == 1
    records = json.loads(proc.stdout)
    assert [r["decision"] for r in records] == ["pass", "error"]
    assert "broken.jpg" in proc.stderr


def test_image_without_a_face_is_not_a_pass(tmp_path, coffee):
    path = tmp_path / "coffee.png"
    path.write_bytes(encode(np.asarray(coffee)))
    proc = check(str(path), "--min-age", "0", "--buffer", "0", "--json", "--untrained", "--model",
                 "efficientnet_lite0", "--no-tta")
    assert proc.returncode == 3
    rec = json.loads(proc.stdout)[0]
    assert rec["faces"] == [] and rec["decision"] == "ask_for_id" and "no face" in rec["summary"]


def test_bad_usage(tmp_path):
    assert check(str(tmp_path / "missing.jpg"), "--min-age", "18").returncode == 1
    assert check("--min-age", "18").returncode == 2  # argparse: PATH is required
