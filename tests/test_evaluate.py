"""Evaluation: metrics on hand-made predictions with known answers, pasting/matching, reports, and the CLI."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import utkface_chips

from agegender.crops.align import chip_detection
from agegender.evaluation import (
    NothingToEvaluate, compute_metrics, match_box, paste_chip, read_labels_csv, register_cli, subset, write_report,
)


def one_hot(ages: list[int]) -> np.ndarray:
    probs = np.zeros((len(ages), 101))
    probs[np.arange(len(ages)), ages] = 1.0
    return probs


def mixture(weights: dict[int, float]) -> np.ndarray:
    probs = np.zeros(101)
    for age, w in weights.items():
        probs[age] = w
    return probs


# Five faces with one-hot predictions, errors +2, 0, +6, -23, +3:
TRUE = [10, 20, 30, 40, 16]
PRED = [12, 20, 36, 17, 19]
GENDER = [0, 1, 0, 1, 0]
P_FEMALE = [0.1, 0.9, 0.6, 0.4, 0.5]  # predicted male, female, female, male, female (0.5 counts as female)
RACE = [0, 1, 2, -1, 0]


@pytest.fixture(scope="module")
def point_metrics() -> dict:
    return compute_metrics(TRUE, GENDER, one_hot(PRED), P_FEMALE, RACE)


def test_age_errors_of_point_predictions(point_metrics):
    m = point_metrics
    assert m["n"] == 5
    assert m["mae"] == pytest.approx(34 / 5)
    assert m["rmse"] == pytest.approx(math.sqrt((4 + 0 + 36 + 529 + 9) / 5))
    assert m["bias"] == pytest.approx(-12 / 5)
    assert m["within_2"] == pytest.approx(2 / 5)  # |+2| and 0
    assert m["within_5"] == pytest.approx(3 / 5)  # … and |+3|


def test_over_18_counts(point_metrics):
    o = point_metrics["over_18"]
    # true adults: 20, 30, 40; said adult: 20, 36, 19. Minor 16 called adult, adult 40 called minor (17).
    assert (o["minors"], o["adults"], o["false_adults"], o["false_minors"]) == (2, 3, 1, 1)
    assert o["accuracy"] == pytest.approx(3 / 5)
    assert o["false_adult_rate"] == pytest.approx(1 / 2)
    assert o["false_minor_rate"] == pytest.approx(1 / 3)


def test_gender_accuracy_uses_half_as_female(point_metrics):
    assert point_metrics["gender_accuracy"] == pytest.approx(2 / 5)


def test_group_accuracy_and_confusion(point_metrics):
    ff = point_metrics["groups"]["fairface9"]
    # true groups 10-19, 20-29, 30-39, 40-49, 10-19; predicted 10-19, 20-29, 30-39, 10-19, 10-19
    assert ff["accuracy"] == pytest.approx(4 / 5)
    assert ff["one_off_accuracy"] == pytest.approx(4 / 5)  # 40-49 → 10-19 is three groups off
    confusion = np.array(ff["confusion"])
    assert confusion.sum() == 5
    assert confusion[2, 2] == 2 and confusion[3, 3] == 1 and confusion[4, 4] == 1 and confusion[5, 2] == 1
    life = point_metrics["groups"]["life4"]
    assert life["accuracy"] == pytest.approx(4 / 5)
    assert life["one_off_accuracy"] == pytest.approx(1.0)  # adult → adolescent is one group off


def test_group_prediction_is_argmax_of_summed_group_probabilities():
    # Expected age 35.8 lies in 30-39, but 40-49 holds 60 % of the mass: the group answer is 40-49.
    probs = mixture({25: 0.4, 41: 0.3, 45: 0.3})[None]
    m = compute_metrics([44], [0], probs, [0.0], presets=("fairface9",))
    assert m["mae"] == pytest.approx(44 - 35.8)
    assert m["groups"]["fairface9"]["accuracy"] == 1.0


def test_slices(point_metrics):
    decade = point_metrics["slices"]["decade"]
    assert list(decade) == ["10-19", "20-29", "30-39", "40-49"]  # empty decades are left out
    assert decade["10-19"]["n"] == 2 and decade["10-19"]["mae"] == pytest.approx(2.5)
    assert decade["40-49"]["within_5"] == 0.0
    gender = point_metrics["slices"]["gender"]
    assert gender["male"]["n"] == 3 and gender["male"]["gender_accuracy"] == pytest.approx(1 / 3)
    race = point_metrics["slices"]["race"]
    assert set(race) == {"White", "Black", "Asian", "unknown"}
    assert race["White"]["n"] == 2 and race["White"]["mae"] == pytest.approx(2.5)


def test_no_race_slices_without_race_labels():
    m = compute_metrics([30], [1], one_hot([30]), [0.9])
    assert "race" not in m["slices"]
    assert compute_metrics([30], [1], one_hot([30]), [0.9], race=[-1])["slices"].keys() == {"decade", "gender"}


def test_perfect_calibration_has_zero_ece():
    p75 = mixture({10: 0.25, 30: 0.75})
    probs = np.stack([p75] * 4 + [one_hot([5])[0], one_hot([40])[0]])
    ages = [30, 30, 30, 10, 5, 40]  # 3 of the 4 faces given P(adult) = 0.75 are adults
    cal = compute_metrics(ages, [0] * 6, probs, [0.2] * 6)["calibration"]
    assert cal["ece"] == pytest.approx(0.0, abs=1e-12)
    assert [b["count"] for b in cal["bins"]] == [1, 0, 0, 0, 0, 0, 0, 4, 0, 1]
    assert cal["bins"][7]["mean_predicted"] == pytest.approx(0.75) and cal["bins"][7]["observed"] == 0.75
    assert cal["bins"][1]["mean_predicted"] is None and cal["bins"][1]["observed"] is None


def test_miscalibration_gives_known_ece():
    p90 = mixture({10: 0.1, 30: 0.9})
    probs = np.stack([p90, p90, one_hot([5])[0], one_hot([8])[0]])
    cal = compute_metrics([30, 12, 5, 8], [0] * 4, probs, [0.2] * 4)["calibration"]
    # bin 0.9-1.0: predicted 0.9, observed 0.5 → gap 0.4 on half the faces; bin 0.0-0.1 is exact.
    assert cal["ece"] == pytest.approx(0.2)


def test_metrics_are_json_safe_without_nan():
    m = compute_metrics([30, 50], [0, 1], one_hot([25, 55]), [0.3, 0.8])  # no minors: rate undefined
    assert m["over_18"]["false_adult_rate"] is None
    json.dumps(m, allow_nan=False)


def test_bad_inputs_are_refused():
    with pytest.raises(NothingToEvaluate):
        compute_metrics([], [], np.zeros((0, 101)), [])
    with pytest.raises(ValueError, match="shapes disagree"):
        compute_metrics([30, 40], [0, 1], one_hot([30]), [0.1, 0.2])


def test_match_box_prefers_the_face_on_the_chip():
    chip_face = (100, 100, 300, 300)
    background_face = (0, 0, 480, 480)  # around the chip: mostly background, rejected
    tight = (150, 140, 260, 270)  # a tight detector box (dlib) lies inside the chip: accepted
    assert match_box([background_face, tight], chip_face)[0] == 1
    assert match_box([background_face], chip_face)[0] is None
    assert match_box([], chip_face) == (None, 0.0)


def test_paste_chip_places_the_chip_intact():
    chip = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    background = np.full((120, 90, 3), 40, dtype=np.uint8)
    canvas, box = paste_chip(chip, background, np.random.default_rng(0))
    assert canvas.shape == (500, 500, 3) and canvas.dtype == np.uint8
    # The face box is the calibrated chip box moved to the paste position.
    cx1, cy1, cx2, cy2 = chip_detection(200).box
    x, y = int(round(box[0] - cx1)), int(round(box[1] - cy1))
    assert 0 <= x <= 300 and 0 <= y <= 300 and box[2] - box[0] == pytest.approx(cx2 - cx1)
    # Inside the feathered rim the chip is copied exactly; the rim blends into the (grey) background.
    assert np.array_equal(canvas[y + 12:y + 188, x + 12:x + 188], chip[12:188, 12:188])
    assert np.abs(canvas[y, x].astype(int) - 40).max() <= 10  # corner: 4 % chip, 96 % background
    canvas2, box2 = paste_chip(chip, background, np.random.default_rng(0))
    assert box2 == box and np.array_equal(canvas, canvas2)


def test_write_report_files_and_valid_json(tmp_path, point_metrics):
    report = write_report(point_metrics, tmp_path / "r", "hand-made", extra={"mode": "crops"})
    out = tmp_path / "r"
    loaded = json.loads((out / "report.json").read_text())
    assert loaded == report and loaded["metrics"]["n"] == 5 and loaded["extra"] == {"mode": "crops"}
    summary = (out / "summary.md").read_text()
    assert "| MAE (years, expected age) | 6.80 (95 % CI " in summary and "false-adult rate" in summary
    assert "## By race" in summary
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(["confusion_fairface9.png", "confusion_life4.png", "confusion_bins10.png",
                           "confusion_adience8.png", "reliability_over_18.png", "mae_by_decade.png"])
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert sorted(report["plots"]) == pngs


def test_labels_csv(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,age,gender,race\na.jpg,34,female,Asian\nb.jpg,7,0,\nmissing.jpg,20,1,0\n")
    rows, missing = read_labels_csv(csv_path, [])
    assert [(r.file, r.age, r.gender, r.race) for r in rows] == [("a.jpg", 34, 1, 2), ("b.jpg", 7, 0, -1)]
    assert missing == 1
    assert rows[0].path() == tmp_path / "a.jpg"
    csv_path.write_text("file,age,gender\na.jpg,34,unknown\n")
    with pytest.raises(ValueError, match="labels.csv:2"):
        read_labels_csv(csv_path, [])


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agegender")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_bad_arguments_exit_2(tmp_path):
    assert _cli(["evaluate", "--split", "utkface:nope"]) == 2
    assert _cli(["evaluate", str(tmp_path / "missing")]) == 2
    assert _cli(["evaluate"]) == 2
    assert _cli(["evaluate", str(tmp_path), "--split", "utkface:test"]) == 2


def test_cli_nothing_labelled_exits_1(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "holiday.jpg")  # no UTKFace label in the name
    assert _cli(["evaluate", str(tmp_path), "--untrained", "--model", "efficientnet_lite0"]) == 1


@pytest.mark.data
@pytest.mark.parametrize("mode, tta, framing", [("crops", True, "detect"), ("pasted", True, None),
                                                 ("crops", False, "detect"), ("crops", True, "template")])
def test_cli_on_six_utkface_chips(tmp_path, mode, tta, framing):
    chips = tmp_path / "chips"
    chips.mkdir()
    for f in utkface_chips(6):  # skips with the reason when the data is missing
        shutil.copy(f, chips / f.name)
    out = tmp_path / "report"
    rc = _cli(["evaluate", str(chips), f"--{mode}", "--model", "efficientnet_lite0", "--untrained",
               "--out", str(out), "--json"] + ([] if tta else ["--no-tta"])
              + (["--chip-framing", framing] if framing == "template" else []))
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    run = report["metrics"]["run"]
    assert run["mode"] == mode and run["images"] == 6 and report["metrics"]["n"] == run["faces_found"]
    assert run["estimator"]["trained"] is False and run["estimator"]["flip_tta"] is tta
    assert run["estimator"]["scale_tta"] is tta  # --no-tta turns the scales off too
    assert (out / "summary.md").is_file() and (out / "predictions.csv").read_text().count("\n") == 7
    with (out / "predictions.csv").open(newline="") as fh:
        how = [row["chip_framing"] for row in csv.DictReader(fh)]
    if mode == "crops":
        assert run["chip_framing"] == framing and report["extra"]["chip_framing"] == framing
        if framing == "detect":  # the detector finds nearly every chip's face; misses fall back to the template
            assert how.count("detected") >= 5 and run["template_fallbacks"] == how.count("template")
        else:
            assert how == ["template"] * 6 and run["template_fallbacks"] is None
    else:
        assert "chip_framing" not in run and how == [""] * 6


@pytest.mark.data
def test_cli_alternate_views_are_run_and_named_in_the_report(tmp_path):
    """``--alternate-views`` (how the age check's second opinion may be validated): the Estimator runs two scale
    views per unsure face, and the report says so, for ``consensus fit`` to hold the panel to it."""
    chips = tmp_path / "chips"
    chips.mkdir()
    for f in utkface_chips(2):
        shutil.copy(f, chips / f.name)
    out = tmp_path / "report"
    assert _cli(["evaluate", str(chips), "--model", "efficientnet_lite0", "--untrained", "--alternate-views",
                 "--out", str(out), "--json"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["extra"]["views"] == "alternate" and "two alternate scale views" in report["title"]
    assert report["metrics"]["run"]["estimator"]["outer_views"] == "alternate"
    from agegender.evaluation.consensus import report_views

    assert report_views(out) == "alternate"

def test_subset_is_seeded_and_keeps_order():
    items = list(range(100))
    a, b = subset(items, 10, seed=3), subset(items, 10, seed=3)
    assert a == b and a == sorted(a) and len(set(a)) == 10
    assert subset(items, 10, seed=4) != a
    assert subset(items, None, seed=3) == items and subset(items, 500, seed=3) == items


def test_evaluate_arguments_name_the_real_chip_framings():
    from agegender.crops.chips import CHIP_FRAMINGS
    from agegender.evaluation import cli_args

    assert cli_args.CHIP_FRAMINGS == CHIP_FRAMINGS
