"""The Streamlit app, page by page, through ``streamlit.testing.v1.AppTest`` (no browser), plus unit tests of
its helpers (the ``app/`` package); the live page is tested in ``test_live_page.py``.

Assertions are on structure (how many cards, that each has an age and a gender, which messages appear), never
on particular ages, so they hold with the untrained fallback model and with trained weights alike.
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # app/ lives at the top of the repository, beside streamlit_app.py
    sys.path.insert(0, str(REPO))

from streamlit.testing.v1 import AppTest  # noqa: E402

from agegender import PRESETS, Estimator, Face  # noqa: E402
from agegender.results import CSV_COLUMNS, crowd_summary  # noqa: E402
from app import analysis, exports, report_data, samples  # noqa: E402
from conftest import set_age_check  # noqa: E402
from app import settings as app_settings  # noqa: E402
from agegender.paths import data_root  # noqa: E402

APP = str(REPO / "streamlit_app.py")
UPLOAD = "pages/1_Upload_photos.py"
LIVE = "pages/2_Live_camera.py"
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


def unescape(text: str) -> str:
    """Markdown source as the reader sees it (file names are backslash-escaped by the app)."""
    return re.sub(r"\\(.)", r"\1", text)


def library_estimator() -> Estimator:
    """An Estimator built the way the app builds its default one (same model, detector and score)."""
    s = app_settings.default_settings()
    if s.model is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return Estimator(app_settings.UNTRAINED_FALLBACK, detector=s.detector, min_score=s.min_score, weights=None)
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
    assert at.selectbox(key="_w_preset").options == [app_settings.preset_label(p) for p in PRESETS]
    models = app_settings.available_models()
    if models:
        assert at.selectbox(key="_w_model").value == models[0]
    else:  # no trained weights bundled: the untrained fallback is announced loudly
        assert any("untrained" in w.value for w in at.warning)


def test_privacy_text_is_shown_once_per_page(astronaut_png):
    def count(at: AppTest) -> int:
        texts = [e.value for kind in ("markdown", "caption", "info") for e in at.get(kind)]
        return sum("never stored" in t for t in texts)

    at = open_page()
    assert count(at) == 1 and not any("never stored" in c.value for c in at.sidebar.get("caption"))
    at.switch_page(UPLOAD).run()
    assert count(at) == 1
    at.file_uploader[0].set_value(("astronaut.png", astronaut_png, "image/png"))
    at.run()
    assert count(at) == 1


# ------------------------------------------------------------------------------------------------ upload
def test_upload_astronaut_gives_one_card_with_age_and_gender(astronaut_png):
    at = open_page(UPLOAD)
    assert not at.file_uploader[0].allowed_type  # no silent type filter: other types get a message instead
    at.file_uploader[0].set_value(("astronaut.png", astronaut_png, "image/png"))
    at.run()
    assert not at.exception, at.exception
    found = cards(at)
    assert len(found) == 1
    assert AGE.search(found[0]) and GENDER.search(found[0]), found[0]
    assert len(at.get("vega_lite_chart")) == 1  # the card's group chart
    table = at.dataframe[0].value
    assert list(table["file"]) == ["astronaut.png"] and len(table) == 1
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
    errors = [unescape(e.value) for e in at.error]
    assert len(errors) == 4, errors
    summary, errors = errors[0], errors[1:]  # the summary at the top, then one error at each file's place
    assert summary.startswith("3 of 4 files could not be analysed") and all(
        n in summary for n in ("broken.jpg", "notes.png", "huge.png"))
    assert "broken.jpg" in errors[0] and "corrupt or truncated" in errors[0]
    assert "notes.png" in errors[1] and "not an image" in errors[1]
    assert "huge.png" in errors[2] and "megapixels" in errors[2]
    assert len(cards(at)) == 1  # the good file in between was analysed
    assert "3 not analysed" in at.get("progress")[0].proto.text


def test_photo_without_a_face_says_so(coffee):
    at = open_page(UPLOAD)
    at.file_uploader[0].set_value(("coffee.png", png(np.asarray(coffee)), "image/png"))
    at.run()
    assert not at.exception, at.exception
    assert any(unescape(i.value).startswith("No face found in coffee.png") for i in at.info)
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
    settings = app_settings.default_settings()
    try:
        good = analysis.analyse_bytes(png(np.asarray(astronaut)), "a.png", estimator)
        bad = analysis.analyse_bytes(b"nope", "b.png", estimator)
        records = exports.result_records([good, bad], estimator, settings)
        doc = json.loads(exports.results_json(records, settings, estimator))
        archive = zipfile.ZipFile(io.BytesIO(exports.annotated_zip([good, good], estimator, settings)))
    finally:
        estimator.close()
    assert bad.error and good.error is None and len(good.faces) == 1
    assert [img["file"] for img in doc["images"]] == ["a.png", "b.png"]  # the failed file too, with its error
    assert doc["images"][1]["error"] and doc["images"][1]["faces"] == []
    face = doc["images"][0]["faces"][0]
    assert face["gender"] in ("female", "male") and len(face["age_probs"]) == 101
    assert abs(sum(face["age_probs"]) - 1) < 1e-3
    assert doc["summary"]["images"] == 2 and doc["summary"]["faces"] == 1 and doc["summary"]["failed"] == 1
    assert archive.namelist() == ["a.annotated.png", "a-2.annotated.png"]  # named as the CLI names them
    assert Image.open(archive.open("a.annotated.png")).size == (512, 512)
    table = exports.faces_table(records)
    assert list(table.columns) == [c for c in CSV_COLUMNS if c != "error"] and len(table) == 1
    too_big = analysis.analyse_bytes(b"x" * 2048, "big.jpg", estimator=None, max_bytes=1024)  # checked before decoding
    assert "over the" in too_big.error


def elements_in_order(node) -> list:
    """Every element of an AppTest tree in page order (blocks are walked depth first)."""
    children = getattr(node, "children", None)
    if not children:
        return [node]
    out = []
    for child in children.values():
        out += elements_in_order(child)
    return out


def test_each_file_is_rendered_as_soon_as_it_is_analysed(astronaut_png, coffee, monkeypatch):
    import app.upload as upload

    log: list[str] = []
    real_analyse, real_render, real_error = upload.analyse_cached, upload.render_result, upload.render_error
    monkeypatch.setattr(upload, "analyse_cached", lambda data, name, *a: log.append(f"analyse {name}")
                        or real_analyse(data, name, *a))
    monkeypatch.setattr(upload, "render_result", lambda r, *a, **k: log.append(f"render {r.name}")
                        or real_render(r, *a, **k))
    monkeypatch.setattr(upload, "render_error", lambda r: log.append(f"error {r.name}") or real_error(r))
    at = open_page(UPLOAD)
    at.file_uploader[0].set_value([("first.png", astronaut_png, "image/png"),
                                   ("report.pdf", b"%PDF-1.4 not a photo", "application/pdf"),
                                   ("coffee.png", png(np.asarray(coffee)), "image/png")])
    at.run()
    assert not at.exception, at.exception
    # analysis and rendering interleave: the first file's result is on the page before the second is analysed
    assert log == ["analyse first.png", "render first.png", "analyse report.pdf", "render report.pdf",
                   "analyse coffee.png", "render coffee.png"], log
    order = []
    for el in elements_in_order(at.main):
        value = unescape(str(getattr(el, "value", "")))
        if "could not be analysed" in value:
            order.append("summary")
        elif value == "first.png":
            order.append("first")
        elif CARD.match(value):
            order.append("card")
        elif value.startswith("**report.pdf**: .pdf files are not supported"):
            order.append("pdf error")
        elif value == "coffee.png":
            order.append("coffee")
        elif value.startswith("No face found in coffee.png"):
            order.append("no face")
    assert order == ["summary", "first", "card", "pdf error", "coffee", "no face"], order


def test_dropped_file_types_and_hostile_names_get_an_escaped_message(astronaut_png):
    at = open_page(UPLOAD)
    at.file_uploader[0].set_value([("**x** [link](http://e.vil) :red[y].pdf", b"%PDF", "application/pdf"),
                                   ("=HYPERLINK(1).png", astronaut_png, "image/png")])
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 2  # the top summary and the file's own error
    raw = errors[1]
    assert "[link](" not in raw and ":red[" not in raw and "\\*\\*x\\*\\*" in raw  # markdown shows as typed
    assert unescape(raw) == "**" + "**x** [link](http://e.vil) :red[y].pdf" + "**: .pdf files are not " \
        "supported: upload JPG, PNG, WebP or BMP images"
    assert any(unescape(h.value) == "=HYPERLINK(1).png" for h in at.subheader)
    csv_button = next(b for b in at.get("download_button") if "CSV" in b.proto.label)
    records = exports.result_records([analysis.ImageResult("=HYPERLINK(1).png", "d", error="x")], None,
                                     app_settings.default_settings())
    from agegender.results import csv_text

    assert csv_text(records).splitlines()[1].startswith("'=HYPERLINK(1).png,")  # no formula in a spreadsheet
    assert csv_button.proto.label.startswith("⬇ CSV")


def test_upload_caps_files_pixels_and_faces(astronaut_png, monkeypatch):
    tiny = png(np.full((8, 8, 3), 200, np.uint8))
    at = open_page(UPLOAD)
    at.file_uploader[0].set_value([(f"t{i:02d}.png", tiny, "image/png")
                                   for i in range(analysis.MAX_FILES_PER_BATCH + 3)])
    at.run()
    assert not at.exception, at.exception
    assert any(f"At most {analysis.MAX_FILES_PER_BATCH} files" in w.value and "3 more were skipped" in w.value
               for w in at.warning)
    assert f"Done: {analysis.MAX_FILES_PER_BATCH} files" in at.get("progress")[0].proto.text

    monkeypatch.setattr(analysis, "MAX_BATCH_MEGAPIXELS", 0.4)  # room for one 512×512 picture (0.26 MP)
    import app.cards as cards_module

    monkeypatch.setattr(cards_module, "MAX_FACES_PER_IMAGE", 1)
    at.file_uploader[0].set_value([("a.png", astronaut_png, "image/png"), ("b.png", astronaut_png, "image/png")])
    at.run()
    assert not at.exception, at.exception
    errors = [unescape(e.value) for e in at.error]
    assert any(e.startswith("**b.png**: not analysed: this upload is over its 0.4-megapixel budget")
               for e in errors), errors
    assert len(cards(at)) == 1
    assert any("at most 1 faces per photo" in w.value for w in at.warning)
    # and the real cap: the shared estimator keeps at most MAX_FACES_PER_IMAGE faces
    from app.estimator_cache import MAX_FACES_PER_IMAGE, _cached_estimator

    assert _cached_estimator(*app_settings.default_settings().estimator_key).detector.max_faces == \
        MAX_FACES_PER_IMAGE


def test_session_keeps_only_a_downscaled_picture(astronaut):
    big = np.ascontiguousarray(np.kron(np.asarray(astronaut), np.ones((6, 6, 1), np.uint8)))  # 3072×3072
    at = open_page(UPLOAD)
    at.file_uploader[0].set_value(("big.png", png(big), "image/png"))
    at.run()
    assert not at.exception, at.exception
    (result,) = at.session_state["_analysis_cache"].values()
    assert (result.width, result.height) == (3072, 3072)
    assert max(result.display.shape[:2]) == analysis.DISPLAY_MAX_SIDE
    assert not any(isinstance(v, np.ndarray) and v.size >= big.size for v in vars(result).values())
    assert result.nbytes < big.nbytes / 3
    assert cards(at)  # faces were found on the full-size picture (boxes in its pixels)
    assert any(abs(f.box[0] - 176 * 6) < 60 for f in result.faces)  # the astronaut, in original pixels


def test_sample_buttons_and_crowd_summary_match_the_library():
    name = "astronaut_crowd.png"
    estimator = library_estimator()
    try:
        faces = estimator.predict(samples.sample_image(name))
    finally:
        estimator.close()
    assert len(faces) >= 8
    at = open_page(UPLOAD)
    at.button(key=f"sample-{name}").click().run()
    assert not at.exception, at.exception
    assert len(cards(at)) == len(faces)
    metrics = {m.label: m.value for m in at.metric}
    females = sum(f.gender == "female" for f in faces)
    assert metrics["Faces"] == str(len(faces))
    assert metrics["Female"] == str(females) and metrics["Male"] == str(len(faces) - females)
    expected = crowd_summary([f.to_dict() for f in faces])
    assert metrics["Mean age"] == f"{expected['mean_age']:.0f}"
    # the two summary charts carry the library's counts
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    titles = [s.get("encoding", {}).get("x", {}).get("title") for s in specs]
    assert "expected age (years)" in titles and "age group" in titles
    at.button(key="sample-clear").click().run()
    assert cards(at) == [] and at.button(key=f"sample-{name}")


def test_batch_summary_adds_up_the_photos(astronaut_png):
    at = open_page(UPLOAD)
    crowd = samples.sample_png("astronaut_group.png")
    at.file_uploader[0].set_value([("a.png", astronaut_png, "image/png"), ("group.png", crowd, "image/png")])
    at.run()
    assert not at.exception, at.exception
    n = len(cards(at))
    labels = [m.label for m in at.metric]
    values = [m.value for m in at.metric]
    assert labels[-5:] == ["Photos", "Faces", "Female", "Male", "Mean age"]  # the batch summary comes last
    assert values[-5] == "2" and values[-4] == str(n)
    assert int(values[-3]) + int(values[-2]) == n
    assert any(h.value == "All photos together" for h in at.subheader)


def test_app_and_cli_exports_share_one_schema(astronaut, tmp_path):
    import subprocess

    from agegender.results import csv_text

    path = tmp_path / "astronaut.png"
    Image.fromarray(np.asarray(astronaut)).save(path)
    estimator = library_estimator()
    settings = app_settings.default_settings()
    try:
        results = [analysis.analyse_bytes(path.read_bytes(), "astronaut.png", estimator),
                   analysis.analyse_bytes(b"nope", "bad.png", estimator)]
        app_records = exports.result_records(results, estimator, settings)
    finally:
        estimator.close()
    (tmp_path / "bad.png").write_bytes(b"nope")
    base = [sys.executable, "-m", "agegender", "predict", str(path), str(tmp_path / "bad.png"), "--untrained",
            "--model", "efficientnet_lite0"]
    jsonl = subprocess.run(base + ["--json", "--age-probs"], capture_output=True, text=True, timeout=180)
    cli_records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    csv_out = subprocess.run(base + ["--csv"], capture_output=True, text=True, timeout=180).stdout
    assert len(cli_records) == 2
    for app_rec, cli_rec in zip(app_records, cli_records, strict=True):
        assert set(app_rec) == set(cli_rec)
        assert set(app_rec["summary"]) == set(cli_rec["summary"])
        assert [set(f) for f in app_rec["faces"]] == [set(f) for f in cli_rec["faces"]]
        assert (app_rec["error"] is None) == (cli_rec["error"] is None)
    assert csv_text(app_records).splitlines()[0] == csv_out.splitlines()[0] == ",".join(CSV_COLUMNS)


# ------------------------------------------------------------------------------------------------ age check
def test_age_check_decision_follows_the_threshold(astronaut):
    at = open_page(AGE_CHECK)
    at.toggle(key="agecheck_consensus").set_value(False)  # the sidebar's model alone
    at.file_uploader(key="agecheck_file").set_value(("astronaut.jpg", jpeg(np.asarray(astronaut)), "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    text = next(m.value for m in at.markdown if m.value.startswith("**Face 1**"))
    found = re.search(r"Estimated age \*\*(\d+)\*\*, 80 % interval (\d+)–(\d+)", text)
    age, low, high = (int(v) for v in found.groups())
    assert "P(age ≥ 18)" in text  # the default threshold

    def decide(threshold: int, buffer: int) -> str:
        set_age_check(at, threshold, buffer)
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
    face = Face(box=(0, 0, 10, 10), score=1.0, keypoints=np.zeros((6, 2)), age=30.0, age_low=30.0,
                   age_high=30.0, age_probs=probs, groups={"x": 1.0}, gender="male", p_female=0.1)
    assert face.age_check(18, 7).passed  # 30 ≥ 25 and 30 ≥ 18 (the page's decision is the library's)
    assert not face.age_check(25, 7).passed  # 30 < 32
    face.age_low = 17.0
    decision = face.age_check(18, 7)
    assert not decision.passed and "too uncertain" in decision.reason
    assert decision.p_at_least == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ model report
def test_training_epochs_add_up_a_fine_tune_chain():
    chain = {"training": {"epochs_completed": 4.0, "initialised_from": {
        "epochs_completed": 3.0, "parent": {"epochs_completed": 9.0, "parent": None}}}}
    assert report_data.training_epochs(chain) == 16.0
    assert report_data.training_epochs({"training": {"epochs_completed": 2.5}}) == 2.5
    assert report_data.training_epochs({"training": {}}) is None and report_data.training_epochs(None) is None


def test_model_report_without_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("AGEGENDER_REPORTS", str(tmp_path))
    at = open_page(REPORT)
    assert not at.exception, at.exception
    assert any("No evaluation report" in i.value for i in at.info)


def _write_report(folder: Path, model: str, seed: int, history: list[dict] | None = None) -> None:
    from agegender.evaluation import compute_metrics

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
    # confusion heatmap, three error breakdowns, calibration, peer comparison and one chart per family of
    # training curves (the bundled manifest's log comes first, else the report's)
    shown = report_data.training_history(report_data.manifest_models().get("efficientnet_lite0"),
                                         {"training": {"history": history}})
    panels = report_data.training_curves(shown)[1]["family"].nunique()
    assert len(at.get("vega_lite_chart")) == 6 + panels
    assert not any("No training history" in i.value for i in at.info)
    assert not any("No peer report" in i.value for i in at.info)
    assert report_data.report_for_model("efficientnet_lite0", report_data.load_reports(tmp_path))[0].startswith("eval-")
    assert report_data.report_for_model("resnet50", report_data.load_reports(tmp_path)) is None
    mae = report_data.error_at_age(report_data.load_reports(tmp_path)["eval-efficientnet_lite0-utkface-test-crops"], 18)
    assert mae is not None and mae[1] == "10-19" and math.isfinite(mae[0])


def test_model_report_charts_one_bar_per_report_and_one_axis_per_family():
    import pandas as pd

    from app import report_charts

    reports = report_data.load_reports(REPO / "reports")
    reports.update(report_data.load_reports(REPO / "reports" / "superseded"))  # the previous Lite0's TTA variants
    rows = pd.DataFrame([report_data.headline(n, r) for n, r in reports.items()]).dropna(subset=["MAE (y)"])
    rows = rows.assign(who=["peer" if n.startswith("peer") else "agegender" for n in rows["report"]])
    spec = report_charts.comparison_chart(rows).to_dict()
    assert spec["encoding"]["y"]["field"] == "report"  # one bar per report folder: nothing stacks
    bars = next(iter(spec["datasets"].values()))
    assert len(bars) == len(rows) == len({b["report"] for b in bars})
    same_label = rows[(rows["model"] == "efficientnet_lite0") & (rows["dataset"] == "utkface-test")
                      & (rows["mode"] == "crops")]
    assert len(same_label) >= 2, "the committed reports hold several Lite0 crops variants"
    assert sorted(b["MAE (y)"] for b in bars if b["report"] in set(same_label["report"])) == \
        sorted(same_label["MAE (y)"])  # each bar its own MAE, not their sum

    history = report_data.training_history(report_data.manifest_models().get("efficientnet_lite0"), None)
    if history is None:
        pytest.skip("the bundled manifest references no training history")
    x, long = report_data.training_curves(history)
    families = dict(zip(long["metric"], long["family"], strict=False))
    assert "step" not in families and "seconds" not in families  # bookkeeping runs to ~1,800: left out
    assert families["lr"] == "learning rate" and families["train_loss"] == "loss"
    assert families["val_mae"] == "MAE (years)" and families["val_gender_acc"] == "accuracy / share"
    panels = [c.to_dict() for c in report_charts.training_curve_charts(long, x)]
    assert [p["title"] for p in panels] == ["loss", "MAE (years)", "accuracy / share", "learning rate"]
    for panel in panels:  # each chart (own y axis, own legend) holds one family's metrics only
        rows = next(iter(panel["datasets"].values()))
        assert {families[r["metric"]] for r in rows} == {panel["title"]}


def test_model_report_shows_the_model_card():
    at = open_page(REPORT)
    card = (REPO / "MODEL_CARD.md").read_text()
    shown = [m.value for m in at.markdown if m.value.strip() == card.strip()]
    assert shown, "the model card is rendered on the model report page"
    assert "not promise" in card
