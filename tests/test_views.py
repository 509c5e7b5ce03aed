"""The view policy chosen on validation (issue 30): scale views only for the faces the network is unsure of, run by
the bundled model on the astronaut, and chosen from per-view reports by ``tta_views --choose``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agegender import Estimator
from agegender.crops.align import crop_face
from agegender.evaluation.tta_views import app_policy, choose
from agegender.views import (SCALE_TTA_CONTEXTS, combine, distribution_std, gender_margin, outer_views, resolve,
                             scale_trigger)


@pytest.fixture(scope="module")
def bundled():
    est = Estimator()
    yield est
    est.close()


@pytest.fixture(scope="module")
def two_faces(bundled, astronaut) -> np.ndarray:
    """(2, 3, S, S, 3): the astronaut's face at the three contexts, and the same from a blurred, shrunk copy."""
    import cv2

    det = bundled.detect(astronaut)[1][0]
    small = cv2.resize(cv2.resize(astronaut, (48, 48), interpolation=cv2.INTER_AREA), astronaut.shape[:2][::-1])
    small = cv2.GaussianBlur(small, (0, 0), 3)
    return np.stack([np.stack([crop_face(img, det, size=bundled.input_size, context=c) for c in SCALE_TTA_CONTEXTS])
                     for img in (astronaut, small)])


def test_policy_in_the_manifest_is_read_strictly():
    assert scale_trigger(None) is None and scale_trigger({}) is None
    assert scale_trigger({"test_time_views": {"scale_views": "all"}}) is None
    assert scale_trigger({"test_time_views": {"scale_views": "adaptive", "trigger_std_years": 6}}) == 6.0
    assert math.isinf(scale_trigger({"test_time_views": {"scale_views": "none"}}))
    with pytest.raises(ValueError, match="unknown"):
        scale_trigger({"test_time_views": {"scale_views": "sometimes"}})
    assert resolve(True, 6.0) == 6.0 and resolve("validated", 6.0) == 6.0
    assert resolve("all", 6.0) == 0.0 and resolve(True, None) == 0.0
    assert resolve(False, 6.0) is None and resolve(True, math.inf) is None
    assert outer_views(None) == "all" and outer_views({"test_time_views": {"scale_views": "all"}}) == "all"
    assert outer_views({"test_time_views": {"scale_views": "adaptive", "outer_views": "alternate"}}) == "alternate"
    with pytest.raises(ValueError, match="outer_views"):
        outer_views({"test_time_views": {"outer_views": "some"}})
    assert gender_margin(None) == 0.0
    adaptive = {"scale_views": "adaptive", "trigger_std_years": 5, "trigger_gender_margin": 0.2}
    assert gender_margin({"test_time_views": adaptive}) == 0.2
    assert gender_margin({"test_time_views": {**adaptive, "scale_views": "all"}}) == 0.0  # every view anyway
    with pytest.raises(ValueError, match="trigger_gender_margin"):
        gender_margin({"test_time_views": {**adaptive, "trigger_gender_margin": 0.7}})


def test_adaptive_views_give_each_face_all_views_or_the_mirror_pair(bundled, two_faces):
    run = bundled.predict_batch
    every_age, every_female = run(two_faces)
    middle_age, middle_female = run(two_faces[:, 1])
    spread = distribution_std(middle_age)
    sure, unsure = int(np.argmin(spread)), int(np.argmax(spread))
    assert spread[unsure] > spread[sure] + 0.1, spread  # the two faces differ in how unsure the network is
    assert np.allclose(combine(run, two_faces, 0.0)[0], every_age)
    assert np.allclose(combine(run, two_faces, None)[0], middle_age)
    age, female = combine(run, two_faces, float(spread.mean()))
    # below the trigger: the mirror pair alone; above: exactly the average of all six views
    assert np.allclose(age[sure], middle_age[sure]) and np.isclose(female[sure], middle_female[sure])
    assert np.allclose(age[unsure], every_age[unsure], atol=1e-9)
    assert np.isclose(female[unsure], every_female[unsure])
    assert not np.allclose(every_age[unsure], middle_age[unsure])  # the scale views did change that face
    # the gender trigger: a margin wider than any face's distance from 0.5 sends the sure face to all six views too
    margin = float(np.abs(middle_female - 0.5).max()) + 1e-6
    age, female = combine(run, two_faces, float(spread.mean()), margin=margin)
    assert np.allclose(age, every_age, atol=1e-9) and np.allclose(female, every_female)
    age, female = combine(run, two_faces, float(spread.mean()), margin=float(np.abs(middle_female[sure] - 0.5)))
    assert np.allclose(age[sure], middle_age[sure])  # the margin is exclusive: exactly at it, no scale views


def test_estimator_follows_the_models_policy_and_runs_fewer_views(bundled, astronaut, monkeypatch):
    calls: list[int] = []
    real = bundled.engine.run

    def counting(batch):
        calls.append(len(batch))
        return real(batch)

    outer_crops: list[int] = []
    real_crops = bundled._crops

    def counting_outer(sources, contexts):
        outer_crops.append(len(sources))
        return real_crops(sources, contexts)

    monkeypatch.setattr(bundled.engine, "run", counting)
    monkeypatch.setattr(bundled, "_crops", counting_outer)
    assert bundled.scale_trigger == scale_trigger(bundled.weights_info)
    assert bundled.outer_views == outer_views(bundled.weights_info)
    assert bundled.gender_margin == gender_margin(bundled.weights_info)
    monkeypatch.setattr(bundled, "outer_views", "all")  # the four scale views (the alternate two: the next test)
    monkeypatch.setattr(bundled, "scale_trigger", 1000.0)  # nobody is that unsure: the mirror pair only
    monkeypatch.setattr(bundled, "gender_margin", 0.0)  # (of age or gender)
    sure = bundled.predict(astronaut)
    assert sum(calls) == 2 and outer_crops == []  # nor are its outer framings cropped
    calls.clear()
    every = bundled.predict(astronaut, scale_tta="all")
    assert sum(calls) == 6 and outer_crops == [1]
    calls.clear()
    monkeypatch.setattr(bundled, "scale_trigger", 0.001)  # everybody is: all six views, the same as "all"
    unsure = bundled.predict(astronaut)
    assert sum(calls) == 2 + 4 and outer_crops == [1, 1]
    assert unsure[0].age == pytest.approx(every[0].age, abs=1e-6)
    assert sure[0].age != pytest.approx(every[0].age, abs=1e-3)
    calls.clear()
    monkeypatch.setattr(bundled, "scale_trigger", 1000.0)
    monkeypatch.setattr(bundled, "gender_margin", 0.5)  # every P(female) is within 0.5 of 0.5: all six views
    coin_toss = bundled.predict(astronaut)
    assert sum(calls) == 6 and coin_toss[0].age == pytest.approx(every[0].age, abs=1e-6)
    assert bundled.info()["scale_trigger_gender_margin"] == 0.5
    with pytest.raises(ValueError, match="scale_tta"):
        Estimator(scale_tta="sometimes")


def test_alternate_outer_views_run_the_tighter_crop_and_the_mirrored_looser_crop(bundled, astronaut, monkeypatch):
    """``"outer_views": "alternate"``: an unsure face costs 2 + 2 views, (mirror pair + 2 · the two outer views) / 3,
    while ``scale_tta="all"`` still runs all six."""
    batches: list[np.ndarray] = []
    real = bundled.engine.run

    def recording(batch):
        batches.append(batch.copy())
        return real(batch)

    det = bundled.detect(astronaut)[1][0]
    tight, middle, loose = (crop_face(astronaut, det, size=bundled.input_size, context=c) for c in SCALE_TTA_CONTEXTS)
    six_age, _ = real(np.stack([tight, middle, loose, tight[:, ::-1], middle[:, ::-1], loose[:, ::-1]]))
    monkeypatch.setattr(bundled, "outer_views", "alternate")
    monkeypatch.setattr(bundled, "scale_trigger", 0.001)
    monkeypatch.setattr(bundled, "calibration", None)
    monkeypatch.setattr(bundled.engine, "run", recording)
    face = bundled.predict(astronaut)[0]
    seen = np.concatenate(batches)
    assert len(seen) == 4
    for view in (middle, middle[:, ::-1], tight, loose[:, ::-1]):
        assert any(np.array_equal(view, s) for s in seen)
    weighted = (six_age[[1, 4]].mean(0) + 2 * six_age[[0, 5]].mean(0)) / 3
    assert face.age == pytest.approx(float(weighted @ np.arange(len(weighted))), abs=1e-4)
    batches.clear()
    every = bundled.predict(astronaut, scale_tta="all")[0]
    assert sum(map(len, batches)) == 6
    assert every.age == pytest.approx(float(six_age.mean(0) @ np.arange(six_age.shape[1])), abs=1e-4)
    monkeypatch.setattr(bundled, "flip_tta", False)  # no mirrors at all: the two outer crops as they are
    batches.clear()
    bundled.predict(astronaut)
    seen = np.concatenate(batches)
    assert len(seen) == 3 and any(np.array_equal(loose, s) for s in seen)


def report(maes: dict[str, float], views: dict[str, float], degraded: bool = False) -> dict:
    return {"model": "efficientnet_lite0", "faces": 100, "degrade_seed": 0 if degraded else None,
            "policies": {n: {"mae": m, "views_per_face": views[n]} for n, m in maes.items()}}


def test_choice_needs_every_report_and_a_policy_the_app_runs():
    views = {"full": 6.0, "flip": 2.0, "adaptive 1 y": 2.5, "adaptive-std 6 y": 3.5, "adaptive-std 8 y": 2.8}
    clean = report({"full": 4.60, "flip": 4.66, "adaptive 1 y": 4.60, "adaptive-std 6 y": 4.615,
                    "adaptive-std 8 y": 4.615}, views)
    degraded = report({"full": 5.60, "flip": 5.65, "adaptive 1 y": 5.60, "adaptive-std 6 y": 5.61,
                       "adaptive-std 8 y": 5.63}, views, degraded=True)
    assert choose([clean]) == "adaptive-std 8 y"  # the disagreement trigger is cheaper but not run by the app
    assert choose([clean, degraded]) == "adaptive-std 6 y"  # std 8 loses 0.03 years on degraded faces
    assert choose([report({"full": 4.6, "flip": 4.7, "adaptive 1 y": 4.7, "adaptive-std 6 y": 4.7,
                           "adaptive-std 8 y": 4.7}, views)]) == "full"
    assert app_policy("adaptive-std 6 y") == {"scale_views": "adaptive", "trigger_std_years": 6.0}
    assert app_policy("flip") == {"scale_views": "none"} and app_policy("adaptive 1 y") is None
    assert app_policy("adaptive-alt-std 5 y") == {"scale_views": "adaptive", "trigger_std_years": 5.0,
                                                  "outer_views": "alternate"}
    assert app_policy("adaptive-alt-std 5 y, gender 0.2") == {"scale_views": "adaptive", "trigger_std_years": 5.0,
                                                              "trigger_gender_margin": 0.2, "outer_views": "alternate"}
    assert app_policy("adaptive-std 6 y, gender 0.1")["trigger_gender_margin"] == 0.1


def test_choice_holds_gender_within_a_tenth_of_a_point_of_all_views():
    views = {"full": 6.0, "flip": 2.0, "adaptive-alt-std 5 y": 3.2, "adaptive-alt-std 5 y, gender 0.2": 3.3}
    maes = {"full": 4.60, "flip": 4.70, "adaptive-alt-std 5 y": 4.61, "adaptive-alt-std 5 y, gender 0.2": 4.61}
    clean = report(maes, views)
    for name, acc in {"full": 0.9506, "flip": 0.9462, "adaptive-alt-std 5 y": 0.9491,
                      "adaptive-alt-std 5 y, gender 0.2": 0.9502}.items():
        clean["policies"][name]["gender_acc"] = acc
    assert choose([clean]) == "adaptive-alt-std 5 y, gender 0.2"  # the cheaper one is 0.15 points behind all views
    assert choose([clean], gender_tolerance=0.002) == "adaptive-alt-std 5 y"
    assert choose([report(maes, views)]) == "adaptive-alt-std 5 y"  # reports without gender: MAE only


def test_a_policy_kept_by_hand_is_installed_with_its_reason_and_numbers(tmp_path, monkeypatch, capsys):
    """``--keep`` installs a policy other than the rule's choice only with a reason, and records the reports' numbers."""
    import json
    import shutil

    import agegender.weights as weights
    from agegender.evaluation import tta_views

    shutil.copy(weights.WEIGHTS_DIR / "MANIFEST.json", tmp_path / "MANIFEST.json")
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    views = {"full": 6.0, "flip": 2.0, "adaptive-std 6 y": 3.5, "adaptive-alt-std 5 y": 3.2}
    clean = report({"full": 4.60, "flip": 4.66, "adaptive-std 6 y": 4.615, "adaptive-alt-std 5 y": 4.63}, views)
    paths = [tmp_path / "clean.json"]
    paths[0].write_text(json.dumps(clean))
    args = ["--choose", str(paths[0]), "--install", "--keep", "adaptive-alt-std 5 y"]
    with pytest.raises(SystemExit):  # no reason given
        tta_views.main(args)
    with pytest.raises(SystemExit):  # a policy the app cannot run
        tta_views.main(["--choose", str(paths[0]), "--install", "--keep", "adaptive 1 y", "--why", "speed"])
    assert tta_views.main(args + ["--why", "kept for speed"]) == 0
    assert "efficientnet_lite0: adaptive-std 6 y" in capsys.readouterr().out  # the rule's choice is still said
    entry = weights.model_entry("efficientnet_lite0", tmp_path)[1]["test_time_views"]
    assert entry["policy"] == "adaptive-alt-std 5 y" and entry["outer_views"] == "alternate"
    assert entry["rule"] == "kept for speed" and entry["validation"]["clean"]["mae"] == 4.63
