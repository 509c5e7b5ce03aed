"""Live-camera logic for the Streamlit app: the per-frame callback, its throttle and its statistics.

Kept apart from the page (and free of Streamlit imports) so it can be unit-tested without a browser: the camera
page only wires :class:`LiveAnalyzer.callback` into ``streamlit_webrtc.webrtc_streamer`` and polls
:meth:`LiveAnalyzer.latest_stats`. Tracking, label smoothing and box motion are the library's
(:mod:`agegender.video.tracking`), shared with the video-file pipeline.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import cv2
import numpy as np

from agegender.video.tracking import FaceTracker, Track, draw_tracks


# ---------------------------------------------------------------------------------------------- the analyzer
@dataclass(frozen=True)
class LiveStats:
    """What the page shows under the video; handed over through a queue, so it is immutable."""

    fps: float  # frames per second leaving the callback (what the viewer sees)
    inference_fps: float  # processed (detected + estimated) frames per second
    latency_ms: float  # detection + model time of the last processed frame
    faces: int
    frames: int
    rows: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    error: str | None = None  # why the last analysis failed, if it did


class LiveAnalyzer:
    """The per-session state behind one ``webrtc_streamer``: estimator, tracker, throttle and statistics.

    ``callback`` runs in streamlit-webrtc's worker thread; with ``async_processing=True`` that worker already
    skips frames that queued up while it was busy. The model itself runs in a thread of its own
    (``background=True``): every frame due for analysis (at least ``min_interval_s`` after the last analysis
    began) goes into a one-frame slot, newest wins, and the thread analyses the slot's frame as soon as it is free.
    It never waits for the next camera frame after an analysis (that wait, half a frame interval on average, cut
    the analysed rate to ~15 of 30 fps with 40 ms analyses), and never queues more than one frame. Meanwhile the
    callback draws the latest tracks on every frame, each box moved ahead with its track's velocity to the frame's
    time (so boxes follow a moving face instead of lagging by one analysis). So the video keeps its frame rate
    however slow the CPU.
    A frame of another size drops the tracks at once (their boxes belong to the old size), and an analysis of an
    old-size frame that finishes later is discarded. ``background=False`` analyses inline (deterministic, for
    tests). Statistics reach the page through a one-slot queue: the page only wants the newest.
    """

    def __init__(self, estimator: Any, *, show_labels: bool = True, min_interval_s: float = 0.0,
                 background: bool = True, tracker: FaceTracker | None = None,
                 clock: Callable[[], float] = time.perf_counter, idle_exit_s: float = 10.0):
        self.estimator = estimator
        self.show_labels = show_labels
        self.min_interval_s = float(min_interval_s)
        self.background = background
        self.tracker = tracker or FaceTracker()
        self.stats_queue: "queue.Queue[LiveStats]" = queue.Queue(maxsize=1)
        self.idle_exit_s = float(idle_exit_s)
        self.error: str | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: tuple[np.ndarray, float] | None = None
        self._busy = False
        self._tracks: list[Track] = []
        self._last_inference = -1e9
        self._last_started = -1e9
        self._latency_ms = 0.0
        self._frame_times: deque[float] = deque(maxlen=30)
        self._inference_times: deque[float] = deque(maxlen=30)
        self._frames = 0
        self._frame_shape: tuple[int, int] | None = None

    def reset(self) -> None:
        """Forget tracks and statistics (a new stream, or another model/detector)."""
        with self._lock:
            self.tracker.reset()
            self._tracks = []
            self._frame_times.clear()
            self._inference_times.clear()
            self._frames = 0
            self._frame_shape = None
            self._latency_ms = 0.0
            self._last_inference = -1e9
            self._last_started = -1e9
            self._pending = None
            self.error = None
        self._drain()

    def process_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Start an analysis of this frame when due, draw the latest tracks on it, return it for display."""
        now = self._clock()
        with self._lock:
            shape = (int(rgb.shape[0]), int(rgb.shape[1]))
            if shape != self._frame_shape:  # another resolution: the old boxes mean nothing here
                self._frame_shape = shape
                self.tracker.check_frame_size(shape)
                self._tracks = []
            due = now - self._last_started >= self.min_interval_s
            inline = due and not self.background and not self._busy
            if inline:
                self._busy = True
                self._last_started = now
            elif due and self.background:
                self._pending = (rgb.copy(), now)  # newest wins; a copy, as the frame buffer is drawn on below
                if not self._busy:
                    self._busy = True
                    self._ensure_worker()
                    self._wake.set()
        if inline:
            self._analyse(rgb, now)
        with self._lock:
            tracks = list(self._tracks)
            drawn = self.tracker.predict(tracks, now)
            self._frame_times.append(now)
            self._frames += 1
            stats = self._stats(tracks)
        self._publish(stats)
        return draw_tracks(rgb, drawn, self.show_labels)

    def callback(self, frame: Any) -> Any:
        """``video_frame_callback`` for streamlit-webrtc: av.VideoFrame in, annotated av.VideoFrame out."""
        import av  # imported here so the module stays importable (and testable) without PyAV

        rgb = frame.to_ndarray(format="rgb24")
        out = self.process_rgb(np.ascontiguousarray(rgb))
        return av.VideoFrame.from_ndarray(out, format="rgb24")

    def latest_stats(self) -> LiveStats | None:
        """The newest statistics, or ``None`` when no frame arrived since the last call."""
        try:
            return self.stats_queue.get_nowait()
        except queue.Empty:
            return None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no analysis is pending or running (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._busy:
                    return True
            time.sleep(0.005)
        return False

    # -------------------------------------------------------------- internals
    def _analyse(self, rgb: np.ndarray, started: float) -> None:
        with self._lock:
            estimator = self.estimator
        t0 = self._clock()
        try:
            faces = estimator.predict(rgb, keep_crops=False, scale_tta=False)  # frame rate over the last 0.1 y
            error = None
        except Exception as exc:  # keep the stream alive and say why there are no boxes
            faces, error = [], f"{type(exc).__name__}: {exc}"
        latency = (self._clock() - t0) * 1000.0
        shape = (int(rgb.shape[0]), int(rgb.shape[1]))
        with self._lock:
            if shape == self._frame_shape:  # else the stream changed size meanwhile: these boxes are stale
                self._tracks = self.tracker.update(faces, t=started, frame_size=shape)
            self._latency_ms = latency
            self._last_inference = started
            self._inference_times.append(started)
            self.error = error
            # A frame that became due meanwhile is analysed at once (the worker loops); else the thread idles.
            self._busy = self._pending is not None
            if self._busy:
                self._wake.set()

    def _ensure_worker(self) -> None:
        """Start the analysis thread if it is not running (call with the lock held)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._worker, name="agegender-live", daemon=True)
            self._thread.start()

    def _worker(self) -> None:
        """Analyse handed-over frames; exit after ``idle_exit_s`` without one (the stream stopped)."""
        while True:
            woke = self._wake.wait(timeout=self.idle_exit_s)
            with self._lock:
                self._wake.clear()
                item, self._pending = self._pending, None
                if item is None:  # a timeout, or the slot was emptied by reset()
                    self._busy = False
                    if not woke:
                        self._thread = None
                        return
                    continue
                self._last_started = item[1]
            self._analyse(*item)

    @staticmethod
    def _rate(times: deque) -> float:
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def _stats(self, tracks: list[Track]) -> LiveStats:
        rows = tuple({"track": t.track_id, "age": round(t.age, 1),
                      "80 % interval": f"{t.interval[0]:.0f}-{t.interval[1]:.0f}", "gender": t.gender,
                      "confidence": f"{max(t.p_female, 1 - t.p_female):.0%}", "frames": t.hits} for t in tracks)
        return LiveStats(fps=self._rate(self._frame_times), inference_fps=self._rate(self._inference_times),
                         latency_ms=self._latency_ms, faces=len(tracks), frames=self._frames, rows=rows,
                         error=self.error)

    def _publish(self, stats: LiveStats) -> None:
        self._drain()
        try:
            self.stats_queue.put_nowait(stats)
        except queue.Full:  # another frame published in between: it is just as new
            pass

    def _drain(self) -> None:
        try:
            while True:
                self.stats_queue.get_nowait()
        except queue.Empty:
            pass


# ---------------------------------------------------------------------------------------------- ICE servers
def ice_servers_from_secrets(secrets: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    """ICE servers for WebRTC from the app's secrets (``[webrtc]`` table), see the README for the format.

    - ``ice_servers = [{urls = [...], username = ..., credential = ...}, ...]``: used as given;
    - ``turn_url``/``turn_username``/``turn_credential`` (+ optional ``stun_url``): one TURN (and STUN) server;
    - ``provider = "auto"``: ``None``, i.e. let streamlit-webrtc pick (it reads Twilio/Cloudflare/Hugging Face
      credentials from the environment, otherwise uses a public STUN server);
    - nothing: ``[]``, no server at all, which works on localhost and in a LAN without any outside request.
    """
    conf = dict((secrets or {}).get("webrtc", {}) or {})
    if conf.get("ice_servers"):
        return [_ice_entry(s) for s in conf["ice_servers"]]
    servers: list[dict[str, Any]] = []
    if conf.get("stun_url"):
        servers.append({"urls": _as_list(conf["stun_url"])})
    if conf.get("turn_url"):
        entry: dict[str, Any] = {"urls": _as_list(conf["turn_url"])}
        if conf.get("turn_username") is not None:
            entry["username"] = str(conf["turn_username"])
        if conf.get("turn_credential") is not None:
            entry["credential"] = str(conf["turn_credential"])
        servers.append(entry)
    if servers:
        return servers
    if str(conf.get("provider", "")).lower() == "auto":
        return None
    return []


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _ice_entry(server: Any) -> dict[str, Any]:
    if isinstance(server, str):
        return {"urls": [server]}
    server = dict(server)
    if "urls" not in server:
        raise ValueError("each [webrtc] ice_servers entry needs 'urls'")
    out: dict[str, Any] = {"urls": _as_list(server["urls"])}
    for key in ("username", "credential"):
        if server.get(key) is not None:
            out[key] = str(server[key])
    return out


def write_y4m(rgb: np.ndarray, path, frames: int = 15, fps: int = 15):
    """A short raw YUV 4:2:0 clip of one still image: Chromium loops it as a fake camera
    (``--use-file-for-fake-video-capture``), so the live page can be tested and benchmarked without a webcam."""
    h, w = rgb.shape[:2]
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fh.write(b"FRAME\n" + yuv.tobytes())
    return path


__all__ = ["FaceTracker", "LiveAnalyzer", "LiveStats", "Track", "draw_tracks", "ice_servers_from_secrets", "write_y4m"]
