"""The live camera: its page through ``AppTest`` (stream widget, readable rate choice, stopped state, snapshot
fallback) and the per-frame logic of ``app/live.py`` (throttle, background thread, boxes that follow a moving
face between analyses, tracks dropped when the frame size changes)."""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # app/ lives at the top of the repository, beside streamlit_app.py
    sys.path.insert(0, str(REPO))

from streamlit.testing.v1 import AppTest  # noqa: E402

from app import live  # noqa: E402
from test_tracking import face as _face  # noqa: E402  (one hand-made Face for both files)

APP = str(REPO / "streamlit_app.py")
LIVE = "pages/2_Live_camera.py"
TIMEOUT = 120


def jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=92)
    return buf.getvalue()




@pytest.fixture(autouse=True)
def _no_webrtc_session(monkeypatch):
    """streamlit-webrtc asks the Streamlit runtime for the session, which AppTest's mock runtime lacks; without a
    session it simply renders the component (as on a first page load)."""
    import streamlit_webrtc.component

    monkeypatch.setattr(streamlit_webrtc.component, "get_this_session_info", lambda: None)


def live_page(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(LIVE).run()
    assert not at.exception, at.exception
    return at


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# ------------------------------------------------------------------------------------------------ the page
def test_live_page_renders_the_stream_and_the_snapshot_fallback(astronaut):
    from test_app import AGE, GENDER, cards

    at = live_page()
    assert at.radio(key="live_mode").value == "Live video"
    rate = at.selectbox(key="live_interval")
    assert rate.label == "How often to analyse a frame" and rate.value == 0
    assert rate.options[0] == "As often as the CPU allows" and "Up to 10 frames a second" in rate.options
    assert list(metric_values(at)) == ["Video FPS", "Analysed FPS", "Latency per analysed frame", "Faces"]
    assert "Not started" in " ".join(m.value for m in at.markdown)
    at.radio(key="live_mode").set_value("Snapshot").run()
    assert not at.exception, at.exception
    at.camera_input(key="live_snapshot").set_value(("snapshot.jpg", jpeg(np.asarray(astronaut)), "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    found = cards(at)
    assert len(found) == 1 and AGE.search(found[0]) and GENDER.search(found[0])


def test_after_stop_the_page_says_stopped_and_shows_no_live_numbers():
    """The state right after STOP (the stream was playing in the previous run, not any more): the metrics read "–",
    a note says what the stream showed, no track table is left behind, and the analyzer forgot its tracks."""
    last = live.LiveStats(fps=24.5, inference_fps=8.1, latency_ms=93.0, faces=2, frames=240,
                          rows=({"track": 1, "age": 30.0, "80 % interval": "25-36", "gender": "female",
                                 "confidence": "90%", "frames": 40},))
    at = live_page()
    analyzer = at.session_state["_live_analyzer"]
    analyzer.tracker.update([_face((0, 0, 10, 10), 30, 0.9)])  # what the stream left behind
    at.session_state["_live_was_playing"] = True
    at.session_state["_live_last_stats"] = last
    at.run()
    assert not at.exception, at.exception
    assert set(metric_values(at).values()) == {"–"}
    assert "Stopped" in " ".join(m.value for m in at.markdown)
    (note,) = at.info
    assert "Stopped. The last stream showed 240 frames and 2 faces" in note.value
    assert not at.dataframe
    assert "_live_last_stats" not in at.session_state
    at.run()  # another rerun (e.g. a setting changed) keeps the stopped state
    assert not at.exception and "240 frames" in at.info[0].value and set(metric_values(at).values()) == {"–"}
    assert at.session_state["_live_analyzer"] is analyzer and analyzer.tracker.tracks == []  # START begins afresh


# ------------------------------------------------------------------------------------------------ the analyzer
def test_live_analyzer_throttles_draws_and_reports_stats():
    class FakeEstimator:
        calls = 0
        scale_tta: list = []

        def predict(self, rgb, keep_crops=True, scale_tta=None):
            FakeEstimator.calls += 1
            FakeEstimator.scale_tta.append(scale_tta)
            return [_face((10, 10, 60, 60), 25, 0.2)]

    now = [0.0]
    analyzer = live.LiveAnalyzer(FakeEstimator(), min_interval_s=0.1, clock=lambda: now[0], background=False)
    frame = np.zeros((120, 160, 3), np.uint8)
    for _ in range(5):
        out = analyzer.process_rgb(frame.copy())
        now[0] += 0.04  # 25 frames per second
    assert FakeEstimator.calls == 2  # t = 0 and t = 0.12: at most every 100 ms
    assert FakeEstimator.scale_tta == [False, False]  # frame rate first: the mirror only, not three framings
    assert out.any()  # the box of the last analysis is drawn on frames in between
    stats = analyzer.latest_stats()
    assert stats is not None and analyzer.latest_stats() is None  # one slot: newest only, then empty
    assert stats.frames == 5 and stats.faces == 1 and stats.fps == pytest.approx(25.0)
    assert stats.rows[0]["frames"] == 2 and stats.rows[0]["confidence"] == "80%"
    analyzer.reset()
    assert analyzer.tracker.tracks == []


def _box_columns(out: np.ndarray, row: int) -> tuple[int, int]:
    cols = np.flatnonzero(out[row].any(axis=1))
    return int(cols.min()), int(cols.max())


def test_boxes_follow_a_moving_face_between_analyses():
    """The face moves 100 px/s to the right; it is analysed at t = 0, 0.2, 0.4. On the frame at t = 0.5 (not
    analysed) the box is drawn where the face is by then, 10 px right of its last analysed position."""
    now = [0.0]

    class Moving:
        def predict(self, rgb, keep_crops=True, scale_tta=None):
            x = 20 + 100 * now[0]
            return [_face((x, 40, x + 60, 100), 25, 0.2)]

    analyzer = live.LiveAnalyzer(Moving(), min_interval_s=0.2, clock=lambda: now[0], background=False,
                                 show_labels=False)
    frame = np.zeros((160, 240, 3), np.uint8)
    for t in (0.0, 0.2, 0.4):
        now[0] = t
        analyzer.process_rgb(frame.copy())
    now[0] = 0.5
    out = analyzer.process_rgb(frame.copy())
    left, right = _box_columns(out, 70)
    assert abs(left - 70) <= 2 and abs(right - 130) <= 2  # x1 = 20 + 100 * 0.5 (the last analysis said 60)


def test_a_new_frame_size_drops_the_old_boxes_at_once():
    class One:
        def predict(self, rgb, keep_crops=True, scale_tta=None):
            return [_face((200, 200, 400, 400), 25, 0.2)]

    now = [0.0]
    analyzer = live.LiveAnalyzer(One(), min_interval_s=10.0, clock=lambda: now[0], background=False)
    assert analyzer.process_rgb(np.zeros((720, 1280, 3), np.uint8)).any()
    now[0] = 1.0  # the camera switches to 320x240 while the next analysis is not yet due
    small = analyzer.process_rgb(np.zeros((240, 320, 3), np.uint8))
    assert not small.any()  # no stale 720p box (whose corner would fall inside the small frame)
    assert analyzer.tracker.tracks == [] and analyzer.tracker.frame_size == (240, 320)


def test_an_analysis_of_an_old_size_frame_is_discarded():
    release = threading.Event()

    class Slow:
        sizes: list = []

        def predict(self, rgb, keep_crops=True, scale_tta=None):
            Slow.sizes.append(rgb.shape[:2])
            release.wait(5)
            if rgb.shape[:2] == (480, 640):
                return [_face((200, 150, 300, 250), 25, 0.2)]  # inside the 320x240 frame too, but stale there
            return [_face((10, 10, 60, 60), 30, 0.8)]

    analyzer = live.LiveAnalyzer(Slow(), background=True, idle_exit_s=0.5)
    analyzer.process_rgb(np.zeros((480, 640, 3), np.uint8))  # analysed in the background…
    deadline = time.monotonic() + 5
    while not Slow.sizes and time.monotonic() < deadline:
        time.sleep(0.01)
    analyzer.process_rgb(np.zeros((240, 320, 3), np.uint8))  # …while the stream changes size
    release.set()
    assert analyzer.wait_idle(5)
    assert Slow.sizes == [(480, 640), (240, 320)]  # the new-size frame waited in the slot, then was analysed
    # The 640x480 result does not come back as a track on 320x240 frames; the 320x240 one does.
    assert [tuple(round(v) for v in t.box) for t in analyzer.tracker.tracks] == [(10, 10, 60, 60)]
    out = analyzer.process_rgb(np.zeros((240, 320, 3), np.uint8))
    assert out[10:61, 10:61].any() and not out[150:251, 200:301].any()


def test_live_analyzer_background_thread_keeps_frames_flowing():
    release = threading.Event()

    class SlowEstimator:
        calls = 0

        def predict(self, rgb, keep_crops=True, scale_tta=None):
            SlowEstimator.calls += 1
            release.wait(5)  # the first analysis "takes" until the test releases it
            return [_face((10, 10, 60, 60), 40, 0.8)]

    analyzer = live.LiveAnalyzer(SlowEstimator(), background=True, idle_exit_s=0.5)
    frame = np.zeros((120, 160, 3), np.uint8)
    analyzer.process_rgb(frame.copy())
    deadline = time.monotonic() + 5
    while SlowEstimator.calls == 0 and time.monotonic() < deadline:  # the thread picks the frame up
        time.sleep(0.01)
    for i in range(19):  # frames keep coming back while the model is busy, without boxes yet
        out = analyzer.process_rgb(np.full_like(frame, i))
        assert (out == i).all()  # nothing drawn on it
    assert SlowEstimator.calls == 1  # one analysis at a time
    assert analyzer._pending[0].max() == 18  # the frames that arrived meanwhile: only the newest waits
    release.set()
    assert analyzer.wait_idle(5)
    assert SlowEstimator.calls == 2  # …and is analysed as soon as the model is free, not one frame later
    out = analyzer.process_rgb(frame.copy())
    assert out.any()  # now the track is drawn
    assert analyzer.wait_idle(5)
    stats = analyzer.latest_stats()
    assert stats.frames == 21 and stats.faces == 1 and stats.error is None


def test_live_analyzer_reports_a_failing_model():
    class Broken:
        def predict(self, rgb, keep_crops=True, scale_tta=None):
            raise RuntimeError("boom")

    analyzer = live.LiveAnalyzer(Broken(), background=False)
    analyzer.process_rgb(np.zeros((10, 10, 3), np.uint8))
    analyzer.process_rgb(np.zeros((10, 10, 3), np.uint8))
    assert analyzer.latest_stats().error == "RuntimeError: boom"


def test_ice_servers_from_secrets():
    assert live.ice_servers_from_secrets({}) == []
    assert live.ice_servers_from_secrets({"webrtc": {"provider": "auto"}}) is None
    servers = live.ice_servers_from_secrets({"webrtc": {"ice_servers": [
        "stun:stun.example.org:3478",
        {"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]}})
    assert servers == [{"urls": ["stun:stun.example.org:3478"]},
                       {"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]
    assert live.ice_servers_from_secrets({"webrtc": {"turn_url": "turn:t:3478", "turn_username": "u",
                                                     "turn_credential": "p"}}) == \
        [{"urls": ["turn:t:3478"], "username": "u", "credential": "p"}]
    with pytest.raises(ValueError):
        live.ice_servers_from_secrets({"webrtc": {"ice_servers": [{"username": "u"}]}})
