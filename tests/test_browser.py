"""End-to-end: the real app (``streamlit run``) driven by Debian's headless Chromium through Playwright.

Chromium runs with a fake camera that plays the astronaut photo (a .y4m made in a temporary folder), so the
live page's WebRTC stream and the snapshot fallback are exercised for real, on localhost without any ICE
server. Screenshots go to ``artifacts/`` (git-ignored).

Needs ``apt-get install chromium`` and ``pip install playwright`` (no ``playwright install``: we use Debian's
browser); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = os.environ.get("AGEGENDER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
GROUP_PHOTO = ("group_photos", "dlib_examples_faces", "2008_007676.jpg")
CARD = '[class*="st-key-facecard-"]'
EXCEPTION = '[data-testid="stException"]'
WEBRTC_IFRAME = 'iframe[title="streamlit_webrtc.component.webrtc_streamer"]'

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (browser tests)")

sys.path.insert(0, str(REPO))
from app.live import write_y4m  # noqa: E402
from conftest import free_port  # noqa: E402


SERVER: dict[str, int] = {}
"""The running server's ``pid`` (for its memory), set by the ``server`` fixture."""


@pytest.fixture(scope="module")
def server():
    """``streamlit run streamlit_app.py`` on a free port; yields its base URL."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit_browser_test.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    SERVER["pid"] = proc.pid
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail(f"streamlit did not start; see {ARTIFACTS / 'streamlit_browser_test.log'}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory, astronaut):
    video = write_y4m(cv2.resize(np.asarray(astronaut), (640, 480)), tmp_path_factory.mktemp("cam") / "astro.y4m")
    args = CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                            f"--use-file-for-fake-video-capture={video}"]
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


@pytest.fixture(scope="module")
def warm_app(server, browser):
    """Load one page once, so the first test does not pay for loading the detector and the network (that
    can take minutes when a training job shares the CPU; the tests' own waits then stay short)."""
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(f"{server}/Upload_photos", timeout=300_000)
    pg.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached", timeout=300_000)
    context.close()
    return server


@pytest.fixture
def page(browser, warm_app):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    pg = context.new_page()
    pg.set_default_timeout(120_000)
    yield pg
    context.close()


def library_face_count(image) -> int:
    """Faces the library finds with the app's default settings (the oracle for the card count)."""
    sys.path.insert(0, str(REPO))
    from agegender import Estimator
    from app.settings import UNTRAINED_FALLBACK, default_settings

    s = default_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        est = Estimator(s.model or UNTRAINED_FALLBACK, detector=s.detector, min_score=s.min_score,
                        weights="bundled" if s.model else None)
    try:
        return len(est.predict(image))
    finally:
        est.close()


def full_screenshot(pg, name: str, width: int = 1400) -> Path:
    """Streamlit scrolls inside its main container, so grow the viewport to the content before the shot."""
    pg.set_viewport_size({"width": width, "height": 1000})
    time.sleep(0.5)
    height = pg.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 1000")
    pg.set_viewport_size({"width": width, "height": int(min(max(height, 1000), 8000))})
    time.sleep(0.5)
    path = ARTIFACTS / name
    pg.screenshot(path=str(path))
    return path


def assert_table_fits(pg, table) -> None:
    """Every column of a dataframe is visible: its grid needs no sideways scrolling and ends inside the page's
    main column (the live track table's last column used to be cut off)."""
    time.sleep(1.5)  # the grid lays out its columns after it appears
    overflow = table.evaluate("""el => { const s = el.querySelector('.dvn-scroller');
        return s ? s.scrollWidth - s.clientWidth : -1; }""")
    assert 0 <= overflow <= 1, f"the table scrolls sideways by {overflow} px (a column is cut off)"
    main = pg.locator('[data-testid="stMainBlockContainer"]').bounding_box()
    box = table.bounding_box()
    assert box["x"] + box["width"] <= main["x"] + main["width"] + 1


def test_upload_group_photo_shows_a_card_per_face(server, page):
    from agegender.paths import data_root

    photo = data_root().joinpath(*GROUP_PHOTO)
    if not photo.is_file():
        pytest.skip(f"needs {photo} (set AGEGENDER_DATA)")
    expected = library_face_count(photo)
    page.goto(f"{server}/Upload_photos")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
    page.locator(CARD).nth(expected - 1).wait_for()
    page.get_by_text("All faces", exact=True).wait_for()
    assert page.locator(CARD).count() == expected
    assert page.locator(EXCEPTION).count() == 0
    assert page.get_by_text(f"Done: 1 file, {expected} faces").count() == 1
    full_screenshot(page, "browser_upload_group.png")


def test_live_camera_streams_with_measured_fps(server, page):
    page.goto(f"{server}/Live_camera")
    start = page.frame_locator(WEBRTC_IFRAME).get_by_role("button", name="START")
    start.wait_for()
    start.click()
    fps_value = page.locator('[data-testid="stMetric"]').filter(has_text="Video FPS").locator(
        '[data-testid="stMetricValue"]')
    deadline = time.monotonic() + 60
    fps = 0.0
    while time.monotonic() < deadline:
        text = fps_value.inner_text().strip()
        try:
            fps = float(text)
        except ValueError:
            fps = 0.0
        if fps > 0:
            break
        time.sleep(0.5)
    assert fps > 0, "the live page never reported a frame rate (WebRTC did not connect?)"
    faces = page.locator('[data-testid="stMetric"]').filter(has_text="Faces").locator(
        '[data-testid="stMetricValue"]')
    deadline = time.monotonic() + 30
    while faces.inner_text().strip() != "1" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert faces.inner_text().strip() == "1"  # the astronaut on the fake camera is tracked
    assert page.locator(EXCEPTION).count() == 0
    page.get_by_text(re.compile(r"\bLive$")).wait_for()  # the badge (after its icon)
    table = page.locator('[data-testid="stDataFrame"]')
    table.wait_for()
    assert_table_fits(page, table)
    page.screenshot(path=str(ARTIFACTS / "browser_live.png"))
    page.frame_locator(WEBRTC_IFRAME).get_by_role("button", name="STOP").click()
    # After STOP: a "stopped" state, no frozen numbers, no track table.
    page.get_by_text(re.compile(r"\bStopped$")).wait_for(timeout=30_000)
    page.get_by_text("Stopped. The last stream showed").wait_for()
    assert fps_value.inner_text().strip() == "–" and faces.inner_text().strip() == "–"
    assert page.locator('[data-testid="stDataFrame"]').count() == 0
    time.sleep(2)  # and it stays so (no poll brings the last live numbers back)
    assert fps_value.inner_text().strip() == "–"
    assert page.locator(EXCEPTION).count() == 0
    page.screenshot(path=str(ARTIFACTS / "browser_live_stopped.png"))


def test_snapshot_fallback_gives_cards(server, page, astronaut):
    expected = library_face_count(cv2.resize(np.asarray(astronaut), (640, 480)))
    page.goto(f"{server}/Live_camera")
    page.get_by_text("Snapshot", exact=True).click()
    take = page.locator('[data-testid="stCameraInputButton"]')
    clear = page.get_by_role("button", name="Clear photo")
    card_or_none = page.locator(CARD).or_(page.get_by_text("No face found in snapshot"))
    try:
        # Chromium's fake camera can hand over a black frame before its video starts (seen on a loaded machine):
        # the page then rightly says "No face found", so clear the photo and take another one.
        for _ in range(4):
            take.wait_for()
            deadline = time.monotonic() + 30
            while take.is_disabled() and time.monotonic() < deadline:
                time.sleep(0.3)
            take.click()
            try:
                clear.wait_for(timeout=20_000)
            except playwright_api.Error:
                continue
            card_or_none.first.wait_for(timeout=120_000)
            if page.locator(CARD).count():
                break
            clear.click()
            time.sleep(1)
        page.locator(CARD).first.wait_for(timeout=5_000)
    except playwright_api.Error:
        page.screenshot(path=str(ARTIFACTS / "browser_snapshot_failed.png"))
        raise
    time.sleep(1)
    assert page.locator(CARD).count() == expected
    assert page.locator(EXCEPTION).count() == 0
    page.screenshot(path=str(ARTIFACTS / "browser_snapshot.png"))


# ------------------------------------------------------------------------------------------------ layout at two widths
WIDTHS = (1400, 390)  # a desktop and a phone (iPhone 12-15 CSS width)
PAGES = {"home": "", "upload": "Upload_photos", "live": "Live_camera", "video": "Video_file",
         "age_check": "Age_check", "model_report": "Model_report"}
ANNOTATED_FITS = """() => {
  const figures = [...document.querySelectorAll('[data-testid="stImage"]')]
    .filter(f => (f.innerText || '').includes(' px · '));
  return figures.map(f => {
    const img = f.querySelector('img');
    const column = f.closest('[data-testid="stVerticalBlock"]');
    return {img: img.getBoundingClientRect().width, natural: img.naturalWidth,
            column: column.getBoundingClientRect().width, page: document.documentElement.clientWidth,
            scroll: document.documentElement.scrollWidth};
  });
}"""


def wide_mosaic(astronaut) -> np.ndarray:
    """2000 × 1000 px: wider than the main column at both widths, so the picture must be scaled to fit."""
    cell = cv2.resize(np.asarray(astronaut), (500, 500), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.vstack([np.hstack([cell, cell[:, ::-1]] * 2)] * 2))


def context_at(browser, width: int):
    return browser.new_context(viewport={"width": width, "height": 900}, permissions=["camera"])


def screenshot_at(pg, name: str, width: int) -> Path:
    height = pg.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 900")
    pg.set_viewport_size({"width": width, "height": int(min(max(height, 900), 8000))})
    time.sleep(0.8)
    path = ARTIFACTS / name
    pg.screenshot(path=str(path))
    return path


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_renders_at_desktop_and_phone_width(browser, warm_app, width):
    """Screenshots of every page (``artifacts/page_<name>_<width>.png``); the upload page with a sample."""
    context = context_at(browser, width)
    pg = context.new_page()
    pg.set_default_timeout(120_000)
    try:
        for name, path in PAGES.items():
            pg.goto(f"{warm_app}/{path}")
            pg.locator('[data-testid="stMain"] h1').first.wait_for()
            if name == "upload":
                pg.get_by_role("button", name="Group of six (mosaic)").click()
                pg.locator(CARD).first.wait_for()
                pg.get_by_text("Done:").wait_for()
            if name == "model_report":
                pg.locator('[data-testid="stVegaLiteChart"]').last.wait_for()
            time.sleep(1.5)
            assert pg.locator(EXCEPTION).count() == 0, name
            overflow = pg.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"{name} at {width} px scrolls sideways by {overflow} px"
            screenshot_at(pg, f"page_{name}_{width}.png", width)
            pg.set_viewport_size({"width": width, "height": 900})
    finally:
        context.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_annotated_picture_is_no_wider_than_its_column(browser, warm_app, width, astronaut, tmp_path):
    photo = tmp_path / "wide.png"
    cv2.imwrite(str(photo), cv2.cvtColor(wide_mosaic(astronaut), cv2.COLOR_RGB2BGR))
    context = context_at(browser, width)
    pg = context.new_page()
    pg.set_default_timeout(180_000)
    try:
        pg.goto(f"{warm_app}/Upload_photos")
        pg.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
        pg.get_by_text("Done:").wait_for()
        pg.locator(CARD).first.wait_for()
        time.sleep(1.5)
        (fit,) = pg.evaluate(ANNOTATED_FITS)
        assert fit["natural"] > fit["column"], fit  # the picture is larger than the column ...
        assert fit["img"] <= fit["column"] + 0.5, fit  # ... and drawn within it
        assert fit["scroll"] <= fit["page"] + 1, fit  # nothing scrolls sideways
        crop = pg.locator(f'{CARD} [data-testid="stImage"] img').first.evaluate(
            "img => ({shown: img.getBoundingClientRect().width, natural: img.naturalWidth, "
            "column: img.closest('[data-testid=\"stColumn\"]').getBoundingClientRect().width})")
        assert crop["shown"] <= crop["natural"] + 0.5, crop  # the model input is not blown up on a phone
        assert crop["shown"] <= crop["column"] + 0.5, crop  # nor drawn over the card's text
        screenshot_at(pg, f"upload_wide_{width}.png", width)
    finally:
        context.close()


def test_time_to_first_and_all_cards_for_bald_guys(browser, warm_app):
    """Measures (never asserts) upload → first card and → all cards; written to artifacts/upload_timings.json."""
    import json

    from agegender.paths import data_root

    photo = data_root() / "group_photos" / "dlib_examples_faces" / "bald_guys.jpg"
    if not photo.is_file():
        pytest.skip(f"needs {photo} (set AGEGENDER_DATA)")
    expected = library_face_count(photo)
    context = context_at(browser, 1400)
    pg = context.new_page()
    pg.set_default_timeout(300_000)
    try:
        pg.goto(f"{warm_app}/Upload_photos")
        pg.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")
        start = time.monotonic()
        pg.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
        pg.locator(CARD).first.wait_for()
        first = time.monotonic() - start
        pg.locator(CARD).nth(expected - 1).wait_for()
        pg.get_by_text("Done:").wait_for()
        every = time.monotonic() - start
        assert pg.locator(CARD).count() == expected
        assert pg.locator(EXCEPTION).count() == 0
    finally:
        context.close()
    load = os.getloadavg()
    record = {"photo": photo.name, "faces": expected, "first_card_s": round(first, 2), "all_cards_s": round(every, 2),
              "loadavg": [round(v, 2) for v in load]}
    (ARTIFACTS / "upload_timings.json").write_text(json.dumps(record, indent=2))
    print(record)


def test_video_page_plays_the_annotated_clip(server, page, astronaut, tmp_path):
    from test_video import make_clip

    clip = tmp_path / "clip.mp4"  # pytest's tmp_path: removed with the session's temporary folders
    clip.write_bytes(make_clip(np.asarray(astronaut), frames=60, step=5))  # 5 s, slow enough for every 5th frame
    page.goto(f"{server}/Video_file")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(clip))
    page.get_by_text("640×360, 12.0 frames/s").wait_for()
    page.get_by_role("button", name="Analyse", exact=True).click()
    page.get_by_text("Download annotated video (MP4)").wait_for(timeout=180_000)
    video = page.locator("video")
    video.wait_for()
    deadline = time.monotonic() + 30
    duration = 0.0
    while time.monotonic() < deadline:  # the browser can decode the H.264 MP4 built in memory
        duration = float(page.evaluate("() => document.querySelector('video')?.duration || 0") or 0)
        if duration > 0:
            break
        time.sleep(0.5)
    assert duration == pytest.approx(5.0, abs=0.2)
    page.locator('[data-testid="stDataFrame"]').wait_for()
    assert page.locator('[data-testid="stDataFrame"]').count() == 1
    people = page.locator('[data-testid="stMetric"]').filter(has_text="People tracked").locator(
        '[data-testid="stMetricValue"]')
    assert people.inner_text().strip() == "1"
    assert_table_fits(page, page.locator('[data-testid="stDataFrame"]'))
    assert page.locator(EXCEPTION).count() == 0
    full_screenshot(page, "browser_video.png")
    full_screenshot(page, "browser_video_390.png", width=390)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_four_sessions_upload_at_once_and_memory_stays_flat(browser, warm_app, tmp_path):
    """Four visitors each drop a group photo and a hostile file at the same moment, 20 uploads in all: each page
    shows its own photo's cards and its own file's error, never a traceback, and the server's RSS after 20
    uploads is within 15 % of its RSS after the first 5 (no per-upload leak)."""
    from agegender.paths import data_root

    folder = data_root() / "group_photos" / "dlib_examples_faces"
    photos = [folder / n for n in ("2008_007676.jpg", "2008_001322.jpg", "2009_004587.jpg", "2007_007763.jpg")]
    if not all(p.is_file() for p in photos):
        pytest.skip(f"needs {folder} (set AGEGENDER_DATA)")
    expected = [library_face_count(p) for p in photos]
    assert len(set(expected)) == 4  # every session's card count is its own photo's
    hostile = []
    for i, photo in enumerate(photos):
        bad = tmp_path / f"visitor{i}-broken.jpg"
        bad.write_bytes(photo.read_bytes()[:2000])  # a truncated JPEG
        hostile.append(bad)
    contexts = [context_at(browser, 1400) for _ in photos]
    pages = [c.new_page() for c in contexts]
    rss: dict[int, float] = {}
    uploads = 0
    try:
        for round_size in (4, 1, 4, 4, 4, 3):  # 20 uploads; the memory is read after the 5th and the 20th
            active = list(range(round_size))
            for i in active:
                pages[i].set_default_timeout(300_000)
                pages[i].goto(f"{warm_app}/Upload_photos")
                pages[i].locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")
            for i in active:  # all drops first, then all waits: the server works on them side by side
                pages[i].locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                    [str(photos[i]), str(hostile[i])])
            for i in active:
                pg = pages[i]
                pg.get_by_text("Done:").wait_for()
                assert pg.locator(CARD).count() == expected[i], (photos[i].name, uploads)
                errors = pg.locator('[data-testid="stAlertContentError"]').all_inner_texts()
                assert any(hostile[i].name in e for e in errors), errors
                assert not any(h.name in " ".join(errors) for j, h in enumerate(hostile) if j != i)
                assert pg.locator(EXCEPTION).count() == 0 and "Traceback" not in pg.content()
            uploads += round_size
            rss[uploads] = _rss_mb(SERVER["pid"])
    finally:
        for c in contexts:
            c.close()
    print(f"server RSS after 5 uploads {rss[5]:.0f} MB, after 20 {rss[20]:.0f} MB")
    assert rss[20] <= rss[5] * 1.15, rss
