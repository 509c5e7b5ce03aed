"""Video files: the library pipeline (``agegender.video.analysis``), the video page through ``AppTest`` and
``agegender predict clip.mp4`` in a subprocess, on short clips made here from the astronaut photo.

The clip: the astronaut (300 px) slides from the left to the right edge of a 640x360 frame in 24 frames at
12 frames/s, about 15 px per frame, so a box drawn where the face was at the last analysed frame would trail
the face by up to 30 px with every 3rd frame analysed.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

av = pytest.importorskip("av", reason="video files need PyAV")

# Imported before any test redirects the temp dir: AppTest makes an (empty) folder of its own on import.
from streamlit.testing.v1 import AppTest  # noqa: E402

from agegender.video.analysis import (  # noqa: E402
    InvalidVideoError, VideoLimits, VideoTooLargeError, analyse_video, probe_video,
)

REPO = Path(__file__).resolve().parents[1]
FRAMES, WIDTH, HEIGHT, FPS, SIDE, TOP = 24, 640, 360, 12, 300, 30


def make_clip(astronaut, fmt: str = "mp4", codec: str = "libx264", frames: int = FRAMES,
              step: float = (WIDTH - SIDE) / (FRAMES - 1)) -> bytes:
    """The sliding-astronaut clip (``step`` px to the right per frame), encoded in memory."""
    face = cv2.resize(np.asarray(astronaut), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(frames):
            img = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
            x = min(round(i * step), WIDTH - SIDE)
            img[TOP:TOP + SIDE, x:x + SIDE] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def decode(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def clip(astronaut) -> bytes:
    return make_clip(astronaut)


@pytest.fixture(scope="module")
def clip_file(clip):
    """The clip as a file in a temporary folder that is removed afterwards (the CLI reads paths)."""
    with tempfile.TemporaryDirectory(prefix="agegender-clip-") as folder:
        path = Path(folder) / "sliding astronaut.mp4"
        path.write_bytes(clip)
        yield path


@pytest.fixture
def empty_dirs(tmp_path, monkeypatch):
    """A fresh temp dir (``tempfile`` writes there) and working directory, to prove nothing is written."""
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.chdir(cwd)
    return tmp, cwd


def listing(*dirs: Path) -> list[str]:
    return sorted(str(p) for d in dirs for p in d.rglob("*"))


# ------------------------------------------------------------------------------------------------ library
def test_probe_reads_the_header(clip):
    info = probe_video(clip)
    assert (info.width, info.height, info.fps, info.frames) == (WIDTH, HEIGHT, FPS, FRAMES)
    assert info.duration_s == pytest.approx(FRAMES / FPS) and info.codec == "h264"


def test_one_track_follows_the_face_through_the_clip(clip, estimator, empty_dirs):
    progress = []
    result = analyse_video(clip, estimator, every=3, progress=lambda *a: progress.append(a))
    assert result.frames == FRAMES and result.frames_analysed == math.ceil(FRAMES / 3)
    (track,) = result.tracks  # one person, one track, in spite of 15 px per frame
    assert track.track_id == 1 and track.frames == result.frames_analysed
    assert track.first_seen_s == 0.0 and track.last_seen_s == pytest.approx(21 / FPS)
    assert track.age_low <= track.age <= track.age_high and 0.5 <= track.gender_confidence <= 1.0
    assert progress[-1] == (1.0, FRAMES, result.frames_analysed)
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)  # the bar only moves forward
    out = decode(result.annotated)
    assert len(out) == FRAMES and out[0].shape == (HEIGHT, WIDTH, 3)
    assert listing(*empty_dirs) == []  # decoded and encoded in memory: no file anywhere


def test_boxes_move_with_the_face_on_frames_that_are_not_analysed(clip, estimator, monkeypatch):
    """On frames between analyses the drawn box is where the detector finds the face on that very frame (to a
    few pixels of detector jitter), not where it was at the last analysis (15-30 px behind)."""
    import agegender.video.analysis as video

    drawn_boxes: list[list[tuple]] = []

    def spy(rgb, tracks, show_labels=True):
        drawn_boxes.append([t.box for t in tracks])
        return draw_tracks(rgb, tracks, show_labels)

    draw_tracks = video.draw_tracks
    monkeypatch.setattr(video, "draw_tracks", spy)
    result = video.analyse_video(clip, estimator, every=3)
    source, drawn = decode(clip), decode(result.annotated)
    assert len(drawn_boxes) == FRAMES
    errors, lags = [], []
    for i in range(4, FRAMES):  # from the second analysis on, the track's velocity is known
        if i % 3 == 0:
            continue  # analysed frames draw the detection itself
        (det,) = estimator.detector.detect(source[i])
        (box,) = drawn_boxes[i]
        centre = (det.box[0] + det.box[2]) / 2
        errors.append(abs((box[0] + box[2]) / 2 - centre))
        (last,) = drawn_boxes[i - i % 3]  # the box of the last analysed frame
        lags.append(abs((last[0] + last[2]) / 2 - centre))
        assert np.abs(drawn[i].astype(int) - source[i].astype(int)).max() > 100  # a box is drawn on it
    assert max(errors) < 8 and np.mean(errors) < 4, errors
    assert np.mean(lags) > 15, lags  # what a box without motion would be off by


@pytest.mark.parametrize("fmt,codec", [("webm", "libvpx-vp9"), ("mov", "libx264"), ("avi", "mpeg4")])
def test_webm_mov_and_avi_are_read_too(astronaut, estimator, fmt, codec):
    data = make_clip(astronaut, fmt, codec, frames=6)
    result = analyse_video(data, estimator, every=2, annotate=False)
    assert result.frames == 6 and result.frames_analysed == 3 and result.annotated is None
    assert len(result.tracks) == 1


def test_people_leaves_out_tracks_seen_once(clip, estimator):
    result = analyse_video(clip, estimator, every=6, annotate=False)  # 60 px per analysis: tracks split
    assert result.frames_analysed == 4 and len(result.tracks) >= 2 and all(t.frames == 1 for t in result.tracks)
    assert result.people() == [] and result.people(1) == result.tracks
    steady = analyse_video(clip, estimator, every=2, annotate=False)
    assert [t.frames for t in steady.people()] == [12]


def test_limits_and_bad_files_get_clear_errors(clip, estimator):
    with pytest.raises(VideoTooLargeError, match=r"lasts 2 s; the limit is 1 s"):
        analyse_video(clip, estimator, limits=VideoLimits(max_duration_s=1.0))
    with pytest.raises(VideoTooLargeError, match=r"MB; the limit is 0 MB"):
        probe_video(clip, VideoLimits(max_bytes=1000))
    with pytest.raises(VideoTooLargeError, match=r"640x360 frames; the limit is 0.1 megapixels"):
        probe_video(clip, VideoLimits(max_pixels=100_000))
    with pytest.raises(InvalidVideoError, match="not a video file"):
        analyse_video(b"this is a text file, not a video" * 20, estimator)
    with pytest.raises(InvalidVideoError, match="empty"):
        probe_video(b"")
    with pytest.raises(InvalidVideoError, match="no such file"):
        probe_video("/nonexistent/clip.mp4")
    with pytest.raises(ValueError):
        analyse_video(clip, estimator, every=0)


def test_a_truncated_file_keeps_the_frames_before_the_cut(astronaut, estimator):
    avi = make_clip(astronaut, "avi", "mpeg4")  # AVI can be read without its index (an MP4 needs its moov atom)
    result = analyse_video(avi[: len(avi) * 2 // 3], estimator, every=4, annotate=False)
    assert 0 < result.frames < FRAMES and result.tracks


# ------------------------------------------------------------------------------------------------ the page
def _no_webrtc(monkeypatch):
    import streamlit_webrtc.component

    monkeypatch.setattr(streamlit_webrtc.component, "get_this_session_info", lambda: None)


def test_video_page_analyses_a_clip_in_memory(clip, empty_dirs, monkeypatch):
    sys.path.insert(0, str(REPO))
    _no_webrtc(monkeypatch)
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/5_Video_file.py").run()
    assert not at.exception, at.exception
    uploader = at.file_uploader(key="video_file")
    assert {".mp4", ".webm", ".mov", ".avi"} <= set(uploader.allowed_type)
    at.select_slider(key="video_every").set_value(3)
    uploader.set_value(("clip.mp4", clip, "video/mp4"))
    at.run()
    assert not at.exception, at.exception
    assert any("640×360, 12.0 frames/s, 2.0 s, about 24 frames → 8 analysed" in c.value for c in at.caption)
    at.button(key="video_analyse").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["People tracked"] == "1" and metrics["Frames analysed"] == "8 of 24"
    (table,) = at.dataframe
    assert list(table.value.columns) == ["track", "median age", "80 % interval", "gender", "confidence",
                                         "first seen (s)", "last seen (s)", "frames"]
    assert table.value.iloc[0]["frames"] == 8 and table.value.iloc[0]["last seen (s)"] == pytest.approx(1.8)
    assert len(at.get("video")) == 1 and len(at.get("download_button")) == 3
    assert listing(*empty_dirs) == []  # the upload, the analysis and the annotated video stayed in memory
    at.run()  # a rerun (a download click) shows the kept result without analysing again
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["People tracked"] == "1"
    assert at.button(key="video_analyse").disabled and not at.get("progress")
    at.select_slider(key="video_every").set_value(6).run()  # 60 px per analysis: each track is seen once
    at.button(key="video_analyse").click().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["People tracked"] == "0" and not at.dataframe
    assert "seen in one analysed frame only" in at.info[0].value
    at.toggle(key="video_show_brief").set_value(True).run()
    assert len(at.dataframe[0].value) >= 2 and (at.dataframe[0].value["frames"] == 1).all()
    assert listing(*empty_dirs) == []


def test_video_page_explains_a_bad_file(monkeypatch):
    sys.path.insert(0, str(REPO))
    _no_webrtc(monkeypatch)
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/5_Video_file.py").run()
    at.file_uploader(key="video_file").set_value(("holiday_[me](http://x.example).mp4",
                                                   b"PK\x03\x04 not really a video" * 50, "video/mp4"))
    at.run()
    assert not at.exception, at.exception
    (error,) = at.error
    assert "not a video file" in error.value and "holiday" in error.value
    assert "\\[me\\]\\(http" in error.value  # the file name is shown as text, not as a markdown link
    assert not at.get("button") or not [b for b in at.button if b.key == "video_analyse"]


# ------------------------------------------------------------------------------------------------ CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "agegender", "predict", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_cli_predicts_a_video_end_to_end(clip_file, tmp_path):
    out_dir = tmp_path / "annotated"
    proc = run_cli(str(clip_file), "--json", "--every", "3", "--annotate", str(out_dir))
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.strip().splitlines()  # JSON Lines: one record per video
    rec = json.loads(line)
    assert rec["file"] == str(clip_file) and rec["error"] is None
    assert (rec["width"], rec["height"], rec["frames"], rec["frames_analysed"], rec["every"]) == (640, 360, 24, 8, 3)
    (track,) = rec["tracks"]
    assert set(track) == {"track", "age", "age_low", "age_high", "gender", "p_female", "gender_confidence",
                          "first_seen_s", "last_seen_s", "frames"}
    assert rec["brief_tracks"] == 0
    assert track["frames"] == 8 and track["gender"] in ("female", "male")
    annotated = Path(rec["annotated"])
    assert annotated == out_dir / "sliding astronaut.annotated.mp4" and len(decode(annotated.read_bytes())) == 24
    table = run_cli(str(clip_file), "--every", "3")
    assert table.returncode == 0 and "1 track(s) in 24 frames (8 analysed, every 3)" in table.stdout
    rows = run_cli(str(clip_file), "--csv", "--every", "3").stdout.splitlines()
    assert rows[0].startswith("file,track,age,") and len(rows) == 2
    split = run_cli(str(clip_file), "--every", "6")  # 60 px per analysis: every track is seen once
    assert split.returncode == 0 and "0 track(s) in 24 frames (4 analysed, every 6; " in split.stdout
    assert "brief track(s) not listed" in split.stdout
    everything = json.loads(run_cli(str(clip_file), "--json", "--every", "6", "--min-track-frames", "1").stdout)
    assert len(everything["tracks"]) >= 2 and everything["brief_tracks"] == 0


def test_cli_reports_a_bad_video_once_and_fails(tmp_path):
    bad = tmp_path / "broken.mov"
    bad.write_bytes(b"\x00" * 4096)
    proc = run_cli(str(bad))
    assert proc.returncode == 1
    assert proc.stderr.count("broken.mov") == 1 and "not a video file" in proc.stderr
    assert "broken.mov" not in proc.stdout
    mixed = run_cli(str(bad), str(REPO / "README.md"))
    assert mixed.returncode == 2 and "separate calls" in mixed.stderr
