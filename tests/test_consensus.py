"""The two-model age check (agegender.assurance.consensus): every model must pass under its own buffer; how an explicit
buffer moves the panel; its measurement and buffer choice on hand-made predictions with known answers; the
manifest install; and the bundled panel end to end on skimage's astronaut (library, CLI and page agree)."""

from __future__ import annotations

import csv
import json
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from agegender.assurance.age_check import member_buffer
from agegender.assurance.consensus import MANIFEST_KEY, ConsensusEstimator, buffers_by_model, consensus_policy
from agegender.evaluation import consensus as ec
from agegender.evaluation.assurance import Split
from agegender.evaluation.policy import policy_row, rates_of_passes
from agegender.face import Face

REPO = Path(__file__).resolve().parents[1]


def face(age: float, low: float, model: str, buffers: dict[int, int]) -> Face:
    probs = np.zeros(101)
    probs[int(round(age))] = 1.0
    return Face(box=(0, 0, 10, 10), score=1.0, keypoints=np.zeros((6, 2)), age=age, age_low=low, age_high=age + 5,
                age_probs=probs, groups=OrderedDict(x=1.0), gender="male", p_female=0.1, calibrated=True,
                validated_buffers=buffers, model=model)


def panel_face(age_a: float, age_b: float) -> Face:
    first = face(age_a, age_a - 6, "a", {18: 10, 21: 8})
    first.second_opinions = (face(age_b, age_b - 6, "b", {18: 12, 21: 9}),)
    return first


def test_every_model_must_pass_under_its_own_buffer():
    both = panel_face(35.0, 31.0).age_check(18)  # a: 35 >= 28, b: 31 >= 30
    assert both.passed and [o.buffer for o in both.opinions] == [10, 12] and both.buffer == 10
    assert "all 2 models pass" in both.reason and both.model == "b"  # the shown numbers: the lower estimate
    vetoed = panel_face(35.0, 29.0).age_check(18)  # b: 29 < 30
    assert not vetoed.passed and vetoed.reason.startswith("b: estimated 29 is under 18 + 12")
    assert vetoed.age == 29.0 and vetoed.model == "b" and [o.passed for o in vetoed.opinions] == [True, False]
    alone = panel_face(35.0, 29.0)
    alone.second_opinions = ()
    assert alone.age_check(18).passed and alone.age_check(18).opinions == ()  # one model: its rule only


def test_an_explicit_buffer_moves_the_whole_panel():
    assert member_buffer({18: 12}, {18: 10}, 18, 7) == 9  # the first model 10 -> 7, the second 12 -> 9
    assert member_buffer({18: 12}, {18: 10}, 18, None) == 12
    assert member_buffer({18: 2}, {18: 10}, 18, 0) == 0  # never below 0
    d = panel_face(30.0, 28.0).age_check(18, 2)  # a: 30 >= 20; b at 4: 28 >= 22
    assert d.passed and [o.buffer for o in d.opinions] == [2, 4]
    record = d.to_dict()
    assert record["decision"] == "pass" and [o["model"] for o in record["opinions"]] == ["a", "b"]
    assert all(o["opinions"] == [] for o in record["opinions"])
    with pytest.raises(ValueError):
        panel_face(30.0, 28.0).age_check(18, -1)


def _panel(ages, a_age, b_age) -> ec.Panel:
    ages = np.asarray(ages)
    n = len(ages)
    labels = Split(ages, np.zeros(n, int), np.zeros(n, int), np.array(["d"] * n), np.zeros((n, 101)))
    a, b = np.asarray(a_age, float), np.asarray(b_age, float)
    return ec.Panel(labels, {"a": (a, a - 3), "b": (b, b - 3)})


def test_the_panel_stops_each_models_outlier_and_the_choice_lowers_both_buffers():
    # 102 people aged 15: both models read 100 of them as 22-23, a reads one as 40 (b: 16), b another as 40 (a: 15);
    # 100 adults aged 30 whom a reads 30 and b 33. Interval low end = estimate - 3.
    a_minor, b_minor = [22.0] * 100 + [40.0, 15.0], [23.0] * 100 + [16.0, 40.0]
    panel = _panel([15] * 102 + [30] * 100, a_minor + [30.0] * 100, b_minor + [33.0] * 100)
    own = {"a": {18: 16, 21: 16, 25: 16}, "b": {18: 16, 21: 16, 25: 16}}
    alone = ec._alone(panel, own, 18)  # each alone at 16 passes its own outlier
    assert alone["a"]["false_pass_near"]["count"] == 1 and alone["b"]["false_pass_near"]["count"] == 1
    result = ec.fit(panel, own)
    choice = result["choice"]
    # together no outlier passes; the bulk (22 and 23) passes once a's buffer is <= 4: the choice is 5 for both
    assert choice["meets_bar"]["18"] is True
    assert choice["buffers"]["18"] == {"a": 5, "b": 5} and choice["shift"]["18"] == 11
    rows = {r["buffer"]: r for r in result["table"]["18"]}
    assert rows[5]["false_pass_near"]["count"] == 0 and rows[5]["asked_reference"]["rate"] == 0.0
    assert rows[4]["false_pass_near"]["count"] == 100
    assert sorted(rows) == list(range(0, 21))  # shifts -4 .. 16


def test_rates_of_passes_is_policy_row_for_one_model():
    rng = np.random.default_rng(0)
    y = rng.integers(5, 70, 400)
    age = y + rng.normal(0, 6, 400)
    low = age - 5
    from agegender.assurance.age_check import passes

    assert rates_of_passes(y, passes(age, low, 21, 7), 21, 7) == policy_row(y, age, low, 21, 7)


def _write_predictions(folder: Path, files: list[str], ages: list[int], probs: np.ndarray,
                       views: str = "validated") -> None:
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"title": "t", "extra": {"views": views}}))
    with open(folder / "predictions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "age", "gender", "race", "detected"])
        w.writeheader()
        for f, a in zip(files, ages):
            w.writerow({"file": f, "age": a, "gender": 0, "race": 0, "detected": "True"})
    np.savez(folder / "age_probs.npz", files=np.array(files), age_probs=probs)


def test_load_panel_applies_each_models_installed_calibration_and_refuses_other_faces(tmp_path):
    probs = np.zeros((3, 101))
    probs[[0, 1, 2], [20, 30, 40]] = 1.0
    _write_predictions(tmp_path / "a", ["x.jpg", "y.jpg", "z.jpg"], [20, 30, 40], probs)
    _write_predictions(tmp_path / "b", ["x.jpg", "y.jpg", "z.jpg"], [20, 30, 40], probs)
    _write_predictions(tmp_path / "c", ["x.jpg", "z.jpg", "y.jpg"], [20, 40, 30], probs)
    panel = ec.load_panel([f"efficientnet_lite0:utkface={tmp_path / 'a'}", f"resnet50:utkface={tmp_path / 'b'}"])
    assert panel.models == ["efficientnet_lite0", "resnet50"] and list(panel.labels.ages) == [20, 30, 40]
    for age, low in panel.estimates.values():
        assert np.all(low <= age) and np.all(np.abs(age - [20, 30, 40]) < 3)
    with pytest.raises(SystemExit, match="other faces"):
        ec.load_panel([f"efficientnet_lite0:utkface={tmp_path / 'a'}", f"resnet50:utkface={tmp_path / 'c'}"])
    with pytest.raises(SystemExit, match="two models"):
        ec.load_panel([f"efficientnet_lite0:utkface={tmp_path / 'a'}"])


def test_install_writes_the_policy_the_estimator_reads(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(REPO / "weights" / "MANIFEST.json", weights / "MANIFEST.json")
    manifest = json.loads((weights / "MANIFEST.json").read_text())
    manifest.pop(MANIFEST_KEY, None)
    (weights / "MANIFEST.json").write_text(json.dumps(manifest))
    assert consensus_policy(weights) is None
    out = tmp_path / "report"
    out.mkdir()
    choice = {"models": ["efficientnet_lite0", "resnet50"], "buffers": {"18": {"efficientnet_lite0": 11,
              "resnet50": 12}}, "meets_bar": {"18": True}, "rule": "r"}
    (out / "choice.json").write_text(json.dumps(choice))
    ec.install(out, weights)
    policy = consensus_policy(weights)
    assert policy is not None and policy["report"] == ec.REPORT
    assert buffers_by_model(policy) == {"efficientnet_lite0": {18: 11}, "resnet50": {18: 12}}
    choice["models"] = ["efficientnet_lite0", "vit_huge"]
    (out / "choice.json").write_text(json.dumps(choice))
    with pytest.raises(SystemExit, match="not bundled"):
        ec.install(out, weights)


def test_the_views_of_the_validation_are_recorded_installed_and_run(tmp_path, astronaut):
    """A panel validated with the ResNet-50 on its mirror views only: the choice names those views, a test
    measurement with other views is refused, the install writes them, and the estimator runs that member with
    those views whatever a call asks, while the first model follows the call."""
    probs = np.zeros((3, 101))
    probs[[0, 1, 2], [20, 30, 40]] = 1.0
    files, ages = ["x.jpg", "y.jpg", "z.jpg"], [20, 30, 40]
    _write_predictions(tmp_path / "l0", files, ages, probs)
    _write_predictions(tmp_path / "r50", files, ages, probs, views="mirror")
    _write_predictions(tmp_path / "r50-all", files, ages, probs, views="validated")
    _write_predictions(tmp_path / "r50-odd", files, ages, probs, views="validated")
    (tmp_path / "r50-odd" / "report.json").write_text(json.dumps({"title": "resnet50 on x (crops, flip TTA only)",
                                                                   "extra": {}}))  # written before views were
    lite0 = f"efficientnet_lite0:utkface={tmp_path / 'l0'}"
    panel = ec.load_panel([lite0, f"resnet50:utkface={tmp_path / 'r50'}"])
    assert panel.views == {"efficientnet_lite0": "validated", "resnet50": "mirror"}
    assert ec.load_panel([lite0, f"resnet50:utkface={tmp_path / 'r50-odd'}"]).views["resnet50"] == "mirror"
    with pytest.raises(SystemExit, match="different test-time views"):
        ec.load_panel([lite0, f"resnet50:utkface={tmp_path / 'r50'}", f"resnet50:x={tmp_path / 'r50-all'}"])
    own = {m: ec.model_settings(m)[1] for m in panel.models}
    choice = ec.fit(panel, own)["choice"]
    assert choice["views"] == panel.views
    with pytest.raises(SystemExit, match="measure what was chosen"):
        ec.test(ec.load_panel([lite0, f"resnet50:utkface={tmp_path / 'r50-all'}"]), own, choice)
    assert ec.test(panel, own, choice)["choice"]["views"] == panel.views

    weights = tmp_path / "weights"
    weights.mkdir()
    for f in (REPO / "weights").iterdir():
        if f.is_file() and f.name != "MANIFEST.json":
            (weights / f.name).symlink_to(f)
    shutil.copy(REPO / "weights" / "MANIFEST.json", weights / "MANIFEST.json")
    (tmp_path / "report" ).mkdir()
    (tmp_path / "report" / "choice.json").write_text(json.dumps(choice))
    assert ec.install(tmp_path / "report", weights)["views"] == panel.views
    estimator = ConsensusEstimator(weights_dir=weights)
    try:
        assert estimator.views == panel.views
        lite, resnet = estimator.members
        assert (lite.flip_tta, lite.scale_tta) == (True, True) and (resnet.flip_tta, resnet.scale_tta) == (True, False)
        seen = {m.model_name: [] for m in estimator.members}
        for member in estimator.members:
            run = member.predict_batch
            member.predict_batch = lambda crops, run=run, log=seen[member.model_name]: log.append(crops.shape) or run(crops)
        faces = estimator.predict(np.asarray(astronaut), scale_tta="all")
        assert len(faces) == 1 and len(faces[0].second_opinions) == 1
        assert seen["efficientnet_lite0"] == [(1, 3, lite.input_size, lite.input_size, 3)]  # every framing
        assert seen["resnet50"] == [(1, resnet.input_size, resnet.input_size, 3)]  # the calibrated crop only
    finally:
        estimator.close()


# ------------------------------------------------------------------------------- the bundled panel, end to end
@pytest.fixture(scope="module")
def bundled_panel(astronaut):
    policy = consensus_policy()
    assert policy is not None, "the bundled manifest has no age-check consensus"
    estimator = ConsensusEstimator()  # the app's and the CLI's settings: default detector and TTA
    try:
        faces = estimator.predict(np.asarray(astronaut))
    finally:
        estimator.close()
    return policy, faces


def test_bundled_panel_gives_every_face_the_other_models_estimate(bundled_panel):
    policy, faces = bundled_panel
    assert len(faces) == 1
    first = faces[0]
    assert first.model == policy["models"][0] and [o.model for o in first.second_opinions] == policy["models"][1:]
    second = first.second_opinions[0]
    assert second.box == first.box and second.calibrated and first.crop is not None and second.crop is None
    assert abs(second.age - first.age) < 15  # the same adult face
    decision = first.age_check(18)
    own = buffers_by_model(policy)
    assert [o.buffer for o in decision.opinions] == [own[m][18] for m in policy["models"]]
    assert decision.passed == all(o.passed for o in decision.opinions)


def test_the_panels_models_run_side_by_side_and_answer_as_one_after_the_other(astronaut):
    """Each member must be inside its own predict at the same time (a Barrier of two breaks after its timeout if
    they ran one after the other), and the panel's faces equal the members' own, called one after the other."""
    import threading

    rgb = np.asarray(astronaut)
    estimator = ConsensusEstimator()
    try:
        detections = estimator.primary.detector.detect(rgb)
        alone = [m.predict_detections(rgb, detections, keep_crops=False) for m in estimator.members]
        meet = threading.Barrier(len(estimator.members), timeout=20)
        threads = set()
        originals = [m.predict_detections for m in estimator.members]
        for member, own in zip(estimator.members, originals):

            def met(*args, own=own, **kwargs):
                threads.add(threading.get_ident())
                meet.wait()
                return own(*args, **kwargs)

            member.predict_detections = met
        faces = estimator.predict(rgb, keep_crops=False)
        assert len(threads) == len(estimator.members) == 2
        assert len(faces) == len(alone[0]) == 1
        # equal up to float rounding: a busy CPU may split a member's views into other chunk sizes
        for face, first, second in zip(faces, alone[0], alone[1]):
            assert face.age == pytest.approx(first.age, abs=1e-4)
            assert face.p_female == pytest.approx(first.p_female, abs=1e-6)
            assert face.second_opinions[0].age == pytest.approx(second.age, abs=1e-4)
            assert face.second_opinions[0].model == second.model != first.model

        def broken(*args, **kwargs):
            raise RuntimeError("the second opinion failed")

        estimator.members[0].predict_detections = originals[0]
        estimator.members[1].predict_detections = broken
        with pytest.raises(RuntimeError, match="second opinion failed"):
            estimator.predict(rgb, keep_crops=False)
    finally:
        estimator.close()


def test_the_committed_choice_is_installed_and_meets_the_bar_at_18():
    choice = json.loads((REPO / ec.REPORT / "choice.json").read_text())
    policy = consensus_policy()
    assert policy["buffers"] == choice["buffers"] and policy["models"] == choice["models"]
    validation = json.loads((REPO / ec.REPORT / "validation.json").read_text())
    row = next(r for r in validation["table"]["18"] if r["buffers"] == choice["buffers"]["18"])
    assert choice["meets_bar"]["18"] and row["false_pass_near"]["rate"] <= 0.01
    # the panel lets no more minors through than its best member alone (the Lite0 alone misses the bar by a face)
    alone = validation["alone"]["18"]
    assert row["false_pass_near"]["count"] <= min(a["false_pass_near"]["count"] for a in alone.values())
    assert alone["efficientnet_lite0"]["false_pass_near"]["rate"] > 0.01


def test_cli_check_defaults_to_the_panel_and_decides_as_the_library(bundled_panel, tmp_path, astronaut):
    import os
    import subprocess
    import sys

    from conftest import encode

    policy, faces = bundled_panel
    path = tmp_path / "astronaut.png"
    path.write_bytes(encode(np.asarray(astronaut)))
    proc = subprocess.run([sys.executable, "-m", "agegender", "check", str(path), "--min-age", "18", "--json"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert "Traceback" not in proc.stderr, proc.stderr
    expected = faces[0].age_check(18)
    assert proc.returncode == (0 if expected.passed else 3)
    decision = json.loads(proc.stdout)[0]["faces"][0]["age_check"]
    assert decision["passed"] == expected.passed and decision["reason"] == expected.reason
    assert [o["model"] for o in decision["opinions"]] == policy["models"]
    for got, want in zip(decision["opinions"], expected.opinions):
        assert got["buffer"] == want.buffer and got["age"] == pytest.approx(want.age, abs=0.05)
    text = subprocess.run([sys.executable, "-m", "agegender", "check", str(path), "--min-age", "18", "--buffer", "3"],
                          capture_output=True, text=True, timeout=300).stdout
    shifted = faces[0].age_check(18, 3)
    assert " and ".join(f"{o.model} ≥ 18 + {o.buffer}" for o in shifted.opinions) in text.splitlines()[0]
    assert all(o.model in text for o in shifted.opinions)


def test_page_checks_with_the_panel_by_default_and_decides_as_the_library(bundled_panel, astronaut):
    import io
    import sys

    from PIL import Image
    from streamlit.testing.v1 import AppTest

    from conftest import set_age_check

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    policy, faces = bundled_panel
    buf = io.BytesIO()
    Image.fromarray(np.asarray(astronaut)).save(buf, format="PNG")
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/3_Age_check.py").run()
    assert at.toggle(key="agecheck_consensus").value is True
    at.file_uploader(key="agecheck_file").set_value(("astronaut.png", buf.getvalue(), "image/png"))
    at.run()
    assert not at.exception, at.exception
    own = buffers_by_model(policy)
    assert at.slider(key="agecheck_buffer").value == own[policy["models"][0]][18]
    for threshold, buffer in ((18, own[policy["models"][0]][18]), (18, 0), (int(faces[0].age) + 1, 0)):
        set_age_check(at, threshold, buffer)
        expected = faces[0].age_check(threshold, buffer)
        verdicts = [s.value for s in at.success] + [w.value for w in at.warning if "Ask for ID" in w.value]
        assert len(verdicts) == 1 and ("**Pass**" in verdicts[0]) == expected.passed, (threshold, verdicts)
        card = next(m.value for m in at.markdown if m.value.startswith("**Face 1**"))
        for o in expected.opinions:
            assert f"{o.model}: {o.age:.0f} ({o.age_low:.0f}–{o.age_high:.0f})" in card
            assert f"at buffer {o.buffer}" in card
        assert any("every model" in m.value for m in at.markdown)
    at.selectbox(key="agecheck_threshold").set_value(18)
    at.slider(key="agecheck_buffer").set_value(own[policy["models"][0]][18])
    at.run()
    table = at.dataframe[0].value  # the panel's measured table, with every model's buffer
    assert "buffers" in table.columns and "◀ current" in table.loc[own[policy["models"][0]][18]].tolist()
    at.toggle(key="agecheck_consensus").set_value(False)
    at.run()
    assert not at.exception, at.exception
    card = next(m.value for m in at.markdown if m.value.startswith("**Face 1**"))
    assert all(f"{m}:" not in card for m in policy["models"][1:])  # one model: no second opinion


def test_a_second_opinion_validated_on_the_alternate_views_runs_them_whatever_the_call_asks(tmp_path, astronaut):
    """``"views": {"resnet50": "alternate"}``: the ResNet-50 keeps its validated trigger but an unsure face gets the
    two alternate scale views instead of four (its gender is never read). The panel runs it exactly so, also when a
    call asks for every view; its estimate is a plain Estimator's with ``outer_views="alternate"``; the Lite0 still
    follows the call; ``scale_tta=False`` (the live camera) still means none."""
    from agegender import Estimator

    weights = tmp_path / "weights"
    weights.mkdir()
    for f in (REPO / "weights").iterdir():
        if f.is_file() and f.name != "MANIFEST.json":
            (weights / f.name).symlink_to(f)
    manifest = json.loads((REPO / "weights" / "MANIFEST.json").read_text())
    manifest[MANIFEST_KEY]["views"]["resnet50"] = "alternate"
    (weights / "MANIFEST.json").write_text(json.dumps(manifest))
    rgb = np.asarray(astronaut)
    estimator = ConsensusEstimator(weights_dir=weights)
    plain = Estimator("resnet50", outer_views="alternate", detector="short", weights_dir=weights)
    try:
        lite, resnet = estimator.members
        assert resnet.outer_views == "alternate" and resnet.info()["outer_views"] == "alternate"
        assert (resnet.flip_tta, resnet.scale_tta) == (True, True)
        seen: dict[str, list[int]] = {m.model_name: [] for m in estimator.members}
        for member in estimator.members:
            run = member.engine.run
            member.engine.run = lambda crops, run=run, log=seen[member.model_name]: log.append(len(crops)) or run(crops)
        resnet.scale_trigger = 0.001  # every face unsure: the scale views run
        faces = estimator.predict(rgb, scale_tta="all")
        assert sum(seen["resnet50"]) == 4 and sum(seen["efficientnet_lite0"]) == 6  # 2 + 2 views; all six
        plain.scale_trigger = 0.001
        expected = plain.predict_detections(rgb, estimator.detector.detect(rgb))[0]
        assert faces[0].second_opinions[0].age == pytest.approx(expected.age, abs=1e-6)
        for log in seen.values():
            log.clear()
        estimator.predict(rgb, scale_tta=False)
        assert sum(seen["resnet50"]) == 2 and sum(seen["efficientnet_lite0"]) == 2  # the mirror pairs only
    finally:
        estimator.close()
        plain.close()
    with pytest.raises(ValueError, match="outer_views"):
        Estimator("resnet50", outer_views="some", detector="short")
