"""The video page's helpers: upload limits, the analysis run with its progress bar, the result's table and downloads.

The work itself is :func:`agegender.video.analysis.analyse_video` (streaming decode, tracker, in-memory H.264); here we
only decide what the page shows. Privacy: the upload stays in Streamlit's memory, the annotated video is built
in a ``BytesIO`` and served from Streamlit's in-memory media store; nothing is written to disk unless the user
clicks a download. One result is kept per session (the newest), so memory does not grow with every upload.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from agegender import AgeGenderError
from agegender.video.analysis import VideoInfo, VideoLimits, VideoResult, analyse_video, probe_video

VIDEO_TYPES = ["mp4", "m4v", "webm", "mov", "avi", "mkv", "ts", "mts", "m2ts"]
MAX_VIDEO_MB = 100
MAX_DURATION_S = 300.0
LIMITS = VideoLimits(max_bytes=MAX_VIDEO_MB * 1024 * 1024, max_duration_s=MAX_DURATION_S)
EVERY_CHOICES = (1, 2, 3, 5, 10, 15, 30)
RESULT_KEY = "_video_result"  # (cache key, VideoResult): the newest analysis of this session


def md_safe(text: str) -> str:
    """A file name as literal text in Streamlit markdown (``*``, ``_``, ``[``… would format or link)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", text)


def every_label(k: int) -> str:
    return "every frame" if k == 1 else {2: "every 2nd frame", 3: "every 3rd frame"}.get(k, f"every {k}th frame")


def digest_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def probe(data: bytes, name: str) -> tuple[VideoInfo | None, str | None]:
    """The header's size, rate and duration, or the reason the file cannot be analysed."""
    stream = io.BytesIO(data)
    stream.name = name
    try:
        return probe_video(stream, LIMITS), None
    except AgeGenderError as exc:
        return None, str(exc)


def info_line(info: VideoInfo, size_bytes: int, every: int) -> str:
    duration = f"{info.duration_s:.1f} s" if info.duration_s is not None else "unknown length"
    frames = f", about {info.frames} frames → {-(-info.frames // every)} analysed" if info.frames else ""
    size = f"{size_bytes / 2**20:.1f} MB" if size_bytes >= 2**20 else f"{size_bytes / 1024:.0f} KB"
    return f"{info.width}×{info.height}, {info.fps:.1f} frames/s, {duration}{frames} ({size}, {info.codec})"


def cached_result(key: tuple) -> VideoResult | None:
    held = st.session_state.get(RESULT_KEY)
    return held[1] if held and held[0] == key else None


def run_analysis(data: bytes, name: str, estimator: Any, every: int, show_labels: bool,
                 key: tuple) -> tuple[VideoResult | None, str | None]:
    """Analyse with a progress bar; the result replaces the session's previous one."""
    st.session_state.pop(RESULT_KEY, None)  # free the old video before decoding a new one
    label = md_safe(name)
    bar = st.progress(0.0, text=f"Analysing {label}…")
    started = time.perf_counter()

    def progress(fraction: float, frames: int, analysed: int) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0),
                     text=f"Analysing {label}: {frames} frames read, {analysed} analysed "
                          f"({time.perf_counter() - started:.0f} s)")

    try:
        stream = io.BytesIO(data)
        stream.name = name
        result = analyse_video(stream, estimator, every=every, limits=LIMITS, annotate=True,
                               show_labels=show_labels, progress=progress)
    except AgeGenderError as exc:
        bar.empty()
        return None, str(exc)
    bar.progress(1.0, text=f"Done: {result.frames} frames, {result.frames_analysed} analysed in "
                           f"{result.seconds:.1f} s ({result.analysed_fps:.1f} analysed frames/s), "
                           f"{len(result.people())} {'person' if len(result.people()) == 1 else 'people'} tracked")
    st.session_state[RESULT_KEY] = (key, result)
    return result, None


def tracks_table(result: VideoResult) -> pd.DataFrame:
    """One row per track: what a person wants to know about each face in the clip."""
    rows = [{"track": t.track_id, "median age": round(t.age, 1), "80 % interval": f"{t.age_low:.0f}-{t.age_high:.0f}",
             "gender": t.gender, "confidence": f"{t.gender_confidence:.0%}", "first seen (s)": round(t.first_seen_s, 1),
             "last seen (s)": round(t.last_seen_s, 1), "frames": t.frames} for t in result.tracks]
    return pd.DataFrame(rows, columns=["track", "median age", "80 % interval", "gender", "confidence",
                                       "first seen (s)", "last seen (s)", "frames"])


def tracks_json(result: VideoResult, name: str) -> str:
    info = result.info
    return json.dumps({"file": name, "width": info.width, "height": info.height, "fps": round(info.fps, 3),
                       "duration_s": info.duration_s, "frames": result.frames,
                       "frames_analysed": result.frames_analysed, "every": result.every,
                       "tracks": [t.to_dict() for t in result.tracks]}, indent=2)


def render_result(result: VideoResult, name: str, show_brief: bool = False) -> None:
    """Summary metrics, the annotated video with its download, the per-track table and its exports.
    ``show_brief``: also list tracks seen in one analysed frame (usually false detections)."""
    stem = Path(name).stem or "video"
    tracks = result.people(1 if show_brief else 2)
    shown = VideoResult(result.info, tracks, result.frames, result.frames_analysed, result.every, result.seconds)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("People tracked", len(tracks))
    c2.metric("Frames analysed", f"{result.frames_analysed} of {result.frames}")
    c3.metric("Analysed frames/s", f"{result.analysed_fps:.1f}", help="Speed of this run on this server")
    c4.metric("Duration", f"{result.frames / result.info.fps:.1f} s")
    video_col, side_col = st.columns([3, 2], gap="medium")
    with video_col:
        if result.annotated:
            st.video(result.annotated, format="video/mp4")
    with side_col:
        if result.annotated:
            st.download_button("Download annotated video (MP4)", result.annotated, f"{stem}.annotated.mp4",
                               mime="video/mp4", key="video_download", icon=":material/download:")
        if tracks:
            table = tracks_table(shown)
            st.download_button("Tracks (CSV)", table.to_csv(index=False), f"{stem}.tracks.csv", mime="text/csv",
                               key="video_csv", icon=":material/table:")
            st.download_button("Tracks (JSON)", tracks_json(shown, name), f"{stem}.tracks.json",
                               mime="application/json", key="video_json", icon=":material/data_object:")
            st.caption("Age: median of the per-frame estimates; interval: 80 % of the track's mean age "
                       "distribution; confidence: of the mean P(female). A track is one face followed from frame "
                       "to frame; the same person may get two tracks after leaving the picture.")
    if tracks:
        st.dataframe(tracks_table(shown), hide_index=True, width="stretch")  # full width: no column cut off
    elif result.tracks:
        st.info("Every face was seen in one analysed frame only: analyse more frames (quick movements split "
                "tracks), or list them with the switch above.")
    else:
        st.info("No face was found in the analysed frames. Try analysing more frames, or the *full* detector "
                "for small faces.")
