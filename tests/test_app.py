"""The Streamlit app, page by page, through ``streamlit.testing.v1.AppTest`` (no browser), plus unit tests of
its helpers (``ui.py``); the live page is tested in ``test_live_page.py``.

Assertions are on structure (how many cards, that each has an age and a gender, which messages appear), never
on particular ages, so they hold with the untrained fallback model and with trained weights alike.
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ui.py and app/ live at the top of the repository, beside streamlit_app.py
    sys.path.insert(0, str(REPO))

from streamlit.testing.v1 import AppTest  # noqa: E402

import ui  # noqa: E402
from agegender import PRESETS, Estimator  # noqa: E402
from agegender.paths import data_root  # noqa: E402

APP = str(REPO / "streamlit_app.py")
UPLOAD = "pages/1_Upload_photos.py"
AGE_CHECK = "pages/3_Age_check.py"
REPORT = "pages/4_Model_report.py"
TIMEOUT = 120  # first run loads the detector and network; the machine may be busy training
GROUP_PHOTOS = ("dlib_examples_faces/2008_007676.jpg", "facenet_pytorch/multiface.jpg", "insightface/t1.jpg")
CARD = re.compile(r"^\*\*Face (\d+)\*\*")
AGE = re.compile(r"Age \*\*\d+\*\* \(80 % interval \d+–\d+\)")
GENDER = re.compile(r"Gender \*\*(female|male)\*\* \(\d+% confident\)")


# ------------------------------------------------------------------------------------------------ helpers
def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def open_page(page: str | None = None) -> AppTest:
    """Run the app from its entry script, as a browser session would, then switch to ``page``."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


def cards(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if CARD.match(m.value)]


def library_estimator() -> Estimator:
    """An Estimator built the way the app builds its default one (same model, detector and score)."""
    s = ui.default_settings()
    if s.model is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return Estimator(ui.UNTRAINED_FALLBACK, detector=s.detector, min_score=s.min_score, weights=None)
    return Estimator(s.model, detector=s.detector, min_score=s.min_score)


def group_photo() -> Path:
    root = data_root() / "group_photos"
    for rel in GROUP_PHOTOS:
        if (root / rel).is_file():
            return root / rel
    pytest.skip(f"needs a group photo under {root} (set AGEGENDER_DATA)")


@pytest.fixture(scope="module")
def astronaut_png(astronaut) -> bytes:
    return png(np.asarray(astronaut))


@pytest.fixture(autouse=True)
def _no_webrtc_session(monkeypatch):
    """streamlit-webrtc asks the Streamlit runtime for the session, which AppTest's mock runtime lacks; without a
    session it simply renders the component (as on a first page load). Harmless for the other pages."""
    import streamlit_webrtc.component

    monkeypatch.setattr(streamlit_webrtc.component, "get_this_session_info", lambda: None)


# ------------------------------------------------------------------------------------------------ home
def test_home_renders_links_privacy_and_settings():
    at = open_page()
    assert at.title[0].value == "agegender"
    assert any("never stored" in i.value for i in at.info)
    keys = {w.key for w in at.sidebar.get("selectbox")} | {w.key for w in at.sidebar.get("slider")}
    assert {"_w_detector", "_w_preset", "_w_min_score"} <= keys
    assert at.selectbox(key="_w_preset").options == [ui.preset_label(p) for p in PRESETS]
    models = ui.available_models()
    if models:
        assert at.selectbox(key="_w_model").value == models[0]
    else:  # no trained weights bundled: the untrained fallback is announced loudly
        assert any("untrained" in w.value for w in at.warning)


# ------------------------------------------------------------------------------------------------ upload
def test_upload_astronaut_gives_one_card_with_age_and_gender(astronaut_png):
    at = open_page(UPLOAD)
    assert sorted(at.file_uploader[0].allowed_type) == sorted(f".{t}" for t in ui.UPLOAD_TYPES)
    at.file_uploader[0].set_value(("astronaut.png", astronaut_png, "image/png"))
    at.run()
    assert not at.exception, at.exception
    found = cards(at)
    assert len(found) == 1
    assert AGE.search(found[0]) and GENDER.search(found[0]), found[0]
    assert len(at.get("vega_lite_chart")) == 1  # the card's group chart
    table = at.dataframe[0].value
    assert list(table["image"]) == ["astronaut.png"] and len(table) == 1
    labels = [b.proto.label for b in at.get("download_button")]
    assert any("CSV" in x for x in labels) and any("JSON" in x for x in labels) and any("zip" in x for x in labels)
    assert not at.error


@pytest.mark.data
def test_upload_group_photo_gives_a_card_per_face():
    path = group_photo()
    estimator = library_estimator()
    try:
        expected = len(estimator.predict(path))
    finally:
        estimator.close()
    assert expected >= 2
    at = open_page(UPLOAD)
    at.file_uploader[0].set_value((path.name, path.read_bytes(), "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    found = cards(at)
    assert len(found) == expected
    assert [int(CARD.match(c).group(1)) for c in found] == list(range(1, expected + 1))
    assert all(AGE.search(c) and GENDER.search(c) for c in found)
    assert len(at.dataframe[0].value) == expected


def test_bad_files_get_an_error_each_and_the_batch_goes_on(astronaut, astronaut_png):
    corrupt = jpeg(np.asarray(astronaut))[:1500]  # a JPEG cut off after its first scan lines
    huge = io.BytesIO()
    Image.new("1", (8000, 7000)).save(huge, format="PNG")  # 56 megapixels in a few kB: over the decoder's limit
    at = open_page(UPLOAD)
    at.file_uploader[0].set_value([
        ("broken.jpg", corrupt, "image/jpeg"),
        ("notes.png", b"shopping list: milk, eggs\n", "image/png"),  # a text file under an image name
        ("astronaut.png", astronaut_png, "image/png"),
        ("huge.png", huge.getvalue(), "image/png"),
    ])
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 3, errors
    assert "broken.jpg" in errors[0] and "corrupt or truncated" in errors[0]
    assert "notes.png" in errors[1] and "not an image" in errors[1]
    assert "huge.png" in errors[2] and "megapixels" in errors[2]
    assert len(cards(at)) == 1  # the good file in between was analysed
    assert "3 unreadable" in at.get("progress")[0].proto.text


def test_photo_without_a_face_says_so(coffee):
    at = open_page(UPLOAD)
    at.file_uploader[0].set_value(("coffee.png", png(np.asarray(coffee)), "image/png"))
    at.run()
    assert not at.exception, at.exception
    assert any(i.value.startswith("No face found in coffee.png") for i in at.info)
    assert cards(at) == []


def test_changing_the_preset_regroups_without_recomputing(astronaut_png):
    at = open_page(UPLOAD)
    at.file_uploader[0].set_value(("astronaut.png", astronaut_png, "image/png"))
    at.run()

    def top_group() -> str:
        return re.search(r"Age group \*\*(.+?)\*\*", cards(at)[0]).group(1)

    assert top_group() in PRESETS["fairface9"].labels
    cache_before = dict(at.session_state["_analysis_cache"])
    at.selectbox(key="_w_preset").set_value("life4").run()
    assert not at.exception, at.exception
    assert top_group() in PRESETS["life4"].labels
    assert at.session_state["cfg_preset"] == "life4"
    # same cache entry, same Face objects: the preset is not part of the estimator key
    assert dict(at.session_state["_analysis_cache"]).keys() == cache_before.keys()
    assert len(at.session_state["_analysis_cache"]) == 1

    # the setting survives a page switch (persistent key copied back into the widget)
    at.switch_page(AGE_CHECK).run()
    assert at.selectbox(key="_w_preset").value == "life4"


def test_downloads_are_built_in_memory(astronaut):
    estimator = library_estimator()
    try:
        good = ui.analyse_bytes(png(np.asarray(astronaut)), "a.png", estimator)
        bad = ui.analyse_bytes(b"nope", "b.png", estimator)
        settings = ui.default_settings()
        doc = json.loads(ui.results_json([good, bad], settings, estimator))
    finally:
        estimator.close()
    assert bad.error and good.error is None and len(good.faces) == 1
    assert [img["name"] for img in doc["images"]] == ["a.png", "b.png"]
    assert doc["images"][0]["faces"][0]["gender"] in ("female", "male")
    archive = zipfile.ZipFile(io.BytesIO(ui.annotated_zip([good, good], show_labels=True)))
    assert archive.namelist() == ["a_annotated.png", "a_2_annotated.png"]
    assert Image.open(archive.open("a_annotated.png")).size == (512, 512)
    table = ui.faces_table([good])
    assert list(table.columns[:3]) == ["image", "face", "age"] and len(table) == 1
    too_big = ui.analyse_bytes(b"x" * 2048, "big.jpg", estimator=None, max_bytes=1024)  # checked before decoding
    assert "over the" in too_big.error


# ------------------------------------------------------------------------------------------------ age check
def test_age_check_decision_follows_the_threshold(astronaut):
    at = open_page(AGE_CHECK)
    at.file_uploader(key="agecheck_file").set_value(("astronaut.jpg", jpeg(np.asarray(astronaut)), "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    text = next(m.value for m in at.markdown if m.value.startswith("**Face 1**"))
    found = re.search(r"Estimated age \*\*(\d+)\*\*, 80 % interval (\d+)–(\d+)", text)
    age, low, high = (int(v) for v in found.groups())
    assert "P(age ≥ 18)" in text  # the default threshold

    def decide(threshold: int, buffer: int) -> str:
        at.selectbox(key="agecheck_threshold").set_value("other")
        at.run()
        at.number_input(key="agecheck_custom").set_value(threshold)
        at.slider(key="agecheck_buffer").set_value(buffer)
        at.run()
        assert not at.exception, at.exception
        verdicts = [s.value for s in at.success] + [w.value for w in at.warning if "Ask for ID" in w.value]
        assert len(verdicts) == 1, verdicts
        return verdicts[0]

    # below both the (rounded) estimate and the interval's lower end: pass
    assert "**Pass**" in decide(max(0, min(low, age) - 1), 0)
    # above the estimate and the interval: ask for ID
    assert "**Ask for ID**" in decide(min(100, max(high, age) + 1), 0)
    assert any("not been measured" in m.value or "mean absolute error" in m.value for m in at.markdown)


def test_age_check_policy_unit():
    probs = np.zeros(101)
    probs[30] = 1.0
    face = ui.Face(box=(0, 0, 10, 10), score=1.0, keypoints=np.zeros((6, 2)), age=30.0, age_low=30.0,
                   age_high=30.0, age_probs=probs, groups={"x": 1.0}, gender="male", p_female=0.1)
    assert ui.age_check(face, 18, 7).passed  # 30 ≥ 25 and 30 ≥ 18
    assert not ui.age_check(face, 25, 7).passed  # 30 < 32
    face.age_low = 17.0
    decision = ui.age_check(face, 18, 7)
    assert not decision.passed and "too uncertain" in decision.reason
    assert decision.p_at_least == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ model report
def test_training_epochs_add_up_a_fine_tune_chain():
    chain = {"training": {"epochs_completed": 4.0, "initialised_from": {
        "epochs_completed": 3.0, "parent": {"epochs_completed": 9.0, "parent": None}}}}
    assert ui.training_epochs(chain) == 16.0
    assert ui.training_epochs({"training": {"epochs_completed": 2.5}}) == 2.5
    assert ui.training_epochs({"training": {}}) is None and ui.training_epochs(None) is None


def test_model_report_without_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("AGEGENDER_REPORTS", str(tmp_path))
    at = open_page(REPORT)
    assert not at.exception, at.exception
    assert any("No evaluation report" in i.value for i in at.info)


def _write_report(folder: Path, model: str, seed: int, history: list[dict] | None = None) -> None:
    from agegender.evaluate import compute_metrics

    rng = np.random.default_rng(seed)
    ages = rng.integers(1, 90, size=200)
    probs = np.exp(-0.5 * ((np.arange(101)[None] - (ages + rng.normal(0, 6, 200))[:, None]) / 5.0) ** 2)
    probs /= probs.sum(1, keepdims=True)
    metrics = compute_metrics(ages, rng.integers(0, 2, 200), probs, rng.random(200), rng.integers(0, 5, 200))
    metrics["run"] = {"mode": "crops", "images": 200, "faces_found": 200, "detection_rate": 1.0,
                      "ms_per_image": 3.0, "estimator": {"model": model}}
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({
        "title": f"{model} on utkface-test (crops)", "extra": {"dataset": "utkface-test", "mode": "crops"},
        "metrics": metrics, "plots": [], **({"training": {"history": history}} if history else {})}))


def test_model_report_with_reports_and_a_peer(tmp_path, monkeypatch):
    history = [{"epoch": e, "train_loss": 3.0 / e, "val_mae": 9.0 - e} for e in range(1, 6)]
    _write_report(tmp_path / "eval-efficientnet_lite0-utkface-test-crops", "efficientnet_lite0", 1, history)
    _write_report(tmp_path / "peer-age-and-gender-utkface-test-crops", "age-and-gender", 2)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text("{not json")
    monkeypatch.setenv("AGEGENDER_REPORTS", str(tmp_path))
    at = open_page(REPORT)
    assert not at.exception, at.exception
    headline = next(d.value for d in at.dataframe if "MAE (y)" in d.value.columns and "report" in d.value.columns)
    assert set(headline["report"]) == {"eval-efficientnet_lite0-utkface-test-crops",
                                       "peer-age-and-gender-utkface-test-crops"}
    # confusion heatmap, three error breakdowns, calibration, training curves, peer comparison
    assert len(at.get("vega_lite_chart")) == 7
    assert not any("No training history" in i.value for i in at.info)
    assert not any("No peer report" in i.value for i in at.info)
    assert ui.report_for_model("efficientnet_lite0", ui.load_reports(tmp_path))[0].startswith("eval-")
    assert ui.report_for_model("resnet50", ui.load_reports(tmp_path)) is None
    mae = ui.error_at_age(ui.load_reports(tmp_path)["eval-efficientnet_lite0-utkface-test-crops"], 18)
    assert mae is not None and mae[1] == "10-19" and math.isfinite(mae[0])
