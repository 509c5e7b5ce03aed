"""The offline scoring of test-time view policies (issue 30): policies computed from stored per-view outputs."""

from __future__ import annotations

import numpy as np

from agegender.evaluation.tta_views import expected, score
from agegender.groups import NUM_AGE_BINS


def one_hot(age: int) -> np.ndarray:
    p = np.zeros(NUM_AGE_BINS)
    p[age] = 1.0
    return p


def face(ages_of_views: list[int]) -> np.ndarray:
    """(6, 102): the six views' distributions (contexts 0.9/1.0/1.1, then mirrors) and a P(female) column."""
    return np.stack([np.append(one_hot(a), 0.5) for a in ages_of_views])


def test_adaptive_policy_spends_scale_views_only_where_the_mirror_disagrees():
    # face 1: mirror agrees (30/30) and the scale views are off (50): flip is right, full is worse.
    # face 2: mirror disagrees (20/40): the scale views (30, 30, 30, 30) pull it to the truth.
    outputs = np.stack([face([50, 30, 50, 50, 30, 50]), face([30, 20, 30, 30, 40, 30])])
    ages = np.array([30.0, 30.0])
    assert np.allclose(expected(outputs[:, :, :-1].mean(1)), [130 / 3, 30.0])
    result = score(outputs, ages)
    policies = result["policies"]
    assert policies["flip"] == {"mae": 0.0, "views_per_face": 2.0}
    assert policies["full"]["mae"] == round((130 / 3 - 30) / 2, 4) and policies["full"]["views_per_face"] == 6.0
    assert policies["adaptive 3 y"] == {"mae": 0.0, "views_per_face": 4.0}  # face 2 disagrees by 20 years
    assert result["choice"] == "flip"  # cheapest within 0.02 years of full (here better than full)


def test_alternate_policy_runs_two_scale_views_weighted_like_four():
    # one unsure face (flip 20/40: spread 10 years) whose tighter crop says 30 and whose mirrored looser crop says
    # 36; the other views of the looser/tighter crops (50) are what the alternate policy never runs.
    outputs = np.stack([face([30, 20, 50, 50, 40, 36]), face([30, 30, 30, 30, 30, 30])])
    outputs[0, :, -1] = [0.8, 0.6, 0.0, 0.0, 0.6, 0.8]  # P(female): the views it runs say female
    outputs[1, :, -1] = 0.2  # the sure face is a man
    ages, genders = np.array([31.0, 30.0]), np.array([1, 0])
    policies = score(outputs, ages, genders)["policies"]
    # (flip + 2 · mean(view 0, view 5)) / 3 = (30 + 2 · 33) / 3 = 32 for the unsure face; 30 for the sure one
    assert policies["adaptive-alt-std 5 y"] == {"mae": 0.5, "views_per_face": 3.0, "gender_acc": 1.0}
    # all four scale views: (30 + 2 · (30 + 50 + 50 + 36) / 4) / 3 = 37.67, and P(female) (0.6 + 2 · 0.4) / 3 < 0.5
    assert policies["adaptive-std 5 y"]["mae"] == round((37 + 2 / 3 - 31) / 2, 4)
    assert policies["adaptive-std 5 y"]["views_per_face"] == 4.0 and policies["adaptive-std 5 y"]["gender_acc"] == 0.5


def test_gender_trigger_sends_coin_toss_faces_to_the_scale_views():
    # face 0 is sure of its age (every view 30) but its mirror pair says P(female) 0.45: a coin toss, called male;
    # the scale views (0.9) say female, as she is. Face 1 is sure of both (P(female) 0.1, a man).
    outputs = np.stack([face([30] * 6), face([40] * 6)])
    outputs[0, :, -1] = [0.9, 0.45, 0.9, 0.9, 0.45, 0.9]
    outputs[1, :, -1] = 0.1
    ages, genders = np.array([30.0, 40.0]), np.array([1, 0])
    policies = score(outputs, ages, genders)["policies"]
    assert policies["adaptive-alt-std 5 y"] == {"mae": 0.0, "views_per_face": 2.0, "gender_acc": 0.5}
    # |0.45 − 0.5| < 0.1: face 0 gets the alternate views, (0.45 + 2 · 0.9) / 3 = 0.75 ≥ 0.5
    assert policies["adaptive-alt-std 5 y, gender 0.1"] == {"mae": 0.0, "views_per_face": 3.0, "gender_acc": 1.0}
    assert policies["adaptive-std 5 y, gender 0.3"]["views_per_face"] == 4.0  # face 1 (|0.1 − 0.5| = 0.4) never
    result = score(outputs, ages, genders)
    assert result["choice"] == "adaptive-alt-std 4 y, gender 0.1"  # flip is as exact in age but loses the woman


def test_stored_view_outputs_are_rescored_without_the_network(tmp_path, monkeypatch):
    """``--outputs FILE``: where the file exists, the policies are scored from it and no Estimator is built."""
    import json

    from agegender.evaluation import tta_views

    outputs = np.stack([face([30, 20, 30, 30, 40, 30]), face([50] * 6)])
    saved = tmp_path / "views.npz"
    meta = {"model": "efficientnet_lite0", "degrade_seed": 0, "precision": "int8"}
    np.savez_compressed(saved, outputs=outputs, ages=np.array([30.0, 50.0]), genders=np.array([1, 0]),
                        meta=json.dumps(meta))

    def no_network(*args, **kwargs):
        raise AssertionError("the network was run")

    monkeypatch.setattr(tta_views, "Estimator", no_network)
    out = tmp_path / "report.json"
    assert tta_views.main(["--outputs", str(saved), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {k: report[k] for k in meta} == meta and report["faces"] == 2
    assert report["policies"] == score(outputs, np.array([30.0, 50.0]), np.array([1, 0]))["policies"]
