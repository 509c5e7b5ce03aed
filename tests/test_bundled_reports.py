"""The committed test reports belong to the committed weights: the report names the bundled file's sha256, the
manifest quotes the report's numbers, and the bundled model predicts the recorded outputs again on 50 test
images (so the accuracy in the README cannot drift from what ships)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from agegender import Estimator
from agegender.evaluation import subset
from agegender.paths import REPO_DIR
from agegender.weights import read_manifest

from conftest import data_path

REPORTS = REPO_DIR / "reports"
N_IMAGES = 50


def _bundled_models() -> list[tuple[str, dict]]:
    return [(name, entry) for name, entry in read_manifest()["files"].items() if entry.get("kind") == "agegender"]


@pytest.mark.data
@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet50"])
def test_bundled_weights_reproduce_their_utkface_test_report(backbone):
    bundled = {entry["backbone"]: (name, entry) for name, entry in _bundled_models()}
    if backbone not in bundled:
        pytest.skip(f"no trained {backbone} bundled")
    name, entry = bundled[backbone]
    report_dir = REPORTS / f"eval-{backbone}-utkface-test-crops"
    report = json.loads((report_dir / "report.json").read_text())
    run = report["metrics"]["run"]
    assert run["estimator"]["weights"]["file"] == name
    assert run["estimator"]["weights"]["sha256"] == entry["sha256"], "the report was made with other weights"
    recorded = entry["metrics"]["test"]["utkface-test:crops"]
    assert recorded["n"] == report["metrics"]["n"] == 2078
    assert recorded["mae"] == pytest.approx(report["metrics"]["mae"], abs=1e-6)

    with (report_dir / "predictions.csv").open(newline="") as fh:
        rows = subset(list(csv.DictReader(fh)), N_IMAGES, seed=0)
    images = data_path("utkface", "images")
    est = Estimator(model=backbone, weights="bundled", detector=run["estimator"]["detector"],
                    flip_tta=run["estimator"].get("flip_tta", False),
                    scale_tta=run["estimator"].get("scale_tta", False),
                    calibrate=bool(run["estimator"]["weights"].get("calibration")),
                    precision=(run["estimator"].get("engine") or {}).get("precision", "float32"))  # as the report was made
    try:
        faces = est.predict_crops([images / row["file"] for row in rows], framing=run.get("chip_framing", "template"))
    finally:
        est.close()
    ages = np.array([f.age for f in faces])
    p_female = np.array([f.p_female for f in faces])
    np.testing.assert_allclose(ages, [float(r["pred_age"]) for r in rows], atol=0.01)
    np.testing.assert_allclose(p_female, [float(r["p_female"]) for r in rows], atol=1e-4)
    true = np.array([int(r["age"]) for r in rows])
    recorded_mae = np.mean([abs(float(r["pred_age"]) - int(r["age"])) for r in rows])
    assert np.abs(ages - true).mean() == pytest.approx(recorded_mae, abs=0.01)
