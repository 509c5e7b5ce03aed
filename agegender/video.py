"""Video files (MP4, WebM, MOV, AVI): every face followed through the clip, an annotated copy, one row per person.

Why streaming: a minute of 720p video is ~1.6 GB of raw frames, so frames are decoded one at a time with PyAV
(FFmpeg), analysed or drawn, encoded and dropped; memory stays at a few frames plus the compressed output.
Why every k-th frame: on a CPU the detector and network take ~50-100 ms per frame, slower than the video plays.
The analysed frames feed the live page's tracker (:mod:`agegender.tracking`), which smooths the labels and
moves each box with its track's velocity on the frames in between, so the annotated video stays fluid.

Privacy: the input may be bytes or a file object (an upload held in memory) and the annotated MP4 (H.264) is
encoded into a ``BytesIO``; nothing is written to disk unless the caller saves ``VideoResult.annotated``.
Limits (file size, duration, frame size) are checked before decoding where the header tells, and again while
decoding, each with a message that says what to do.
"""

from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Callable, Union

import numpy as np

from .errors import AgeGenderError
from .groups import age_interval, expected_age
from .tracking import FaceTracker, Track, draw_tracks

VIDEO_SUFFIXES = (".mp4", ".m4v", ".webm", ".mov", ".avi", ".mkv")
VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]
ProgressCallback = Callable[[float, int, int], None]  # (fraction done, frames decoded, frames analysed)


class InvalidVideoError(AgeGenderError, ValueError):
    """Not a video FFmpeg can decode (corrupt, truncated, no video stream, another kind of file)."""


class VideoTooLargeError(InvalidVideoError):
    """The video exceeds a limit of :class:`VideoLimits` (file size, duration or frame size)."""


@dataclass(frozen=True)
class VideoLimits:
    """What we agree to decode. The defaults fit a shared CPU server; the CLI raises the duration."""

    max_bytes: int = 200 * 1024 * 1024
    max_duration_s: float = 300.0
    max_pixels: int = 3840 * 2160  # 4K UHD frames


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration_s: float | None  # None when the container does not say (some WebM/streamed files)
    frames: int | None  # estimated from the header
    codec: str
    container: str


@dataclass(frozen=True)
class TrackSummary:
    """One person in a video: statistics over the analysed frames in which their track was matched.

    ``age`` is the median of the per-frame expected ages (robust to a few bad frames); ``age_low``/``age_high``
    bound the central 80 % of the track's mean age distribution (widened to contain ``age``); ``p_female`` is the
    mean per-frame P(female). ``first_seen_s``/``last_seen_s`` are times in the video; ``frames`` counts the
    analysed frames that saw the face.
    """

    track_id: int
    age: float
    age_low: float
    age_high: float
    gender: str
    p_female: float
    first_seen_s: float
    last_seen_s: float
    frames: int

    @property
    def gender_confidence(self) -> float:
        return float(max(self.p_female, 1.0 - self.p_female))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"track": self.track_id, "age": round(self.age, 2), "age_low": self.age_low,
                "age_high": self.age_high, "gender": self.gender, "p_female": round(self.p_female, 4),
                "gender_confidence": round(self.gender_confidence, 4), "first_seen_s": round(self.first_seen_s, 3),
                "last_seen_s": round(self.last_seen_s, 3), "frames": self.frames}


@dataclass
class VideoResult:
    info: VideoInfo
    tracks: list[TrackSummary]
    frames: int  # frames decoded
    frames_analysed: int
    every: int
    seconds: float  # wall time of decoding, analysis and encoding
    annotated: bytes | None = field(default=None, repr=False)  # H.264 MP4, if asked for

    @property
    def analysed_fps(self) -> float:
        """Analysed frames per second of wall time (the pipeline's speed on this machine)."""
        return self.frames_analysed / self.seconds if self.seconds > 0 else 0.0


class _TrackStats:
    """Per-track sums over analysed frames: a few floats per frame, so a long video stays small."""

    def __init__(self, t: float):
        self.ages: list[float] = []
        self.p_female: list[float] = []
        self.probs = np.zeros(101)
        self.first = self.last = t

    def add(self, track: Track, t: float) -> None:
        probs = track.last_age_probs if track.last_age_probs is not None else track.age_probs
        self.ages.append(float(expected_age(probs)))
        self.p_female.append(float(track.last_p_female))
        self.probs += probs
        self.last = t

    def summary(self, track_id: int) -> TrackSummary:
        age = float(np.median(self.ages))
        low, high = age_interval(self.probs / self.probs.sum(), 0.8)
        p_female = float(np.mean(self.p_female))
        return TrackSummary(track_id, age, min(low, float(math.floor(age))), max(high, float(math.ceil(age))),
                            "female" if p_female >= 0.5 else "male", p_female, self.first, self.last, len(self.ages))


def _av():
    try:
        import av
    except ImportError:  # pragma: no cover - av comes with streamlit-webrtc
        raise AgeGenderError("video files need PyAV: pip install av") from None
    return av


def _source_size(source: VideoSource) -> int | None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    if isinstance(source, (str, os.PathLike)):
        return Path(source).stat().st_size if Path(source).is_file() else None
    try:
        pos = source.tell()
        size = source.seek(0, io.SEEK_END)
        source.seek(pos)
        return int(size)
    except (AttributeError, OSError, ValueError):
        return None


def _open(source: VideoSource, limits: VideoLimits):
    """The opened container and its first video stream, or a clear error."""
    av = _av()
    label = str(source) if isinstance(source, (str, os.PathLike)) else str(getattr(source, "name", "the video"))
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise InvalidVideoError(f"{source}: no such file")
    size = _source_size(source)
    if size == 0:
        raise InvalidVideoError(f"{label} is empty (0 bytes)")
    if size is not None and size > limits.max_bytes:
        raise VideoTooLargeError(f"{label} is {size / 2**20:.0f} MB; the limit is {limits.max_bytes / 2**20:.0f} MB. "
                                 "Cut or compress it first.")
    src = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    if isinstance(src, os.PathLike):
        src = os.fspath(src)
    try:
        container = av.open(src, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise InvalidVideoError(f"{label}: not a video file, or a format FFmpeg cannot read ({why})") from None
    if not container.streams.video:
        container.close()
        raise InvalidVideoError(f"{label} has no video stream")
    return container, container.streams.video[0], label


def _info(container, stream) -> VideoInfo:
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate and 0 < float(rate) <= 240 else 30.0
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    frames = int(stream.frames) if stream.frames else (int(round(duration * fps)) if duration else None)
    return VideoInfo(int(ctx.width), int(ctx.height), fps, duration, frames, str(ctx.name),
                     str(container.format.name))


def _check(info: VideoInfo, limits: VideoLimits, label: str) -> None:
    if info.width * info.height > limits.max_pixels:
        raise VideoTooLargeError(f"{label} has {info.width}x{info.height} frames; the limit is "
                                 f"{limits.max_pixels / 1e6:.1f} megapixels per frame. Downscale it first.")
    if info.width < 1 or info.height < 1:
        raise InvalidVideoError(f"{label}: the video stream has no frame size")
    if info.duration_s is not None and info.duration_s > limits.max_duration_s + 0.5:
        raise VideoTooLargeError(f"{label} lasts {info.duration_s:.0f} s; the limit is {limits.max_duration_s:.0f} s. "
                                 "Cut it first.")


def probe_video(source: VideoSource, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Frame size, frame rate and duration from the header, checked against ``limits`` (no frame decoded)."""
    container, stream, label = _open(source, limits)
    try:
        info = _info(container, stream)
        _check(info, limits, label)
        return info
    finally:
        container.close()


class _Encoder:
    """H.264 MP4 into memory: plays in every browser and is small (CRF 23, ``veryfast`` for CPU time)."""

    def __init__(self, width: int, height: int, fps: float):
        av = _av()
        self.buffer = io.BytesIO()
        self.container = av.open(self.buffer, mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate, options={"crf": "23", "preset": "veryfast"})
        self.width, self.height = width - width % 2, height - height % 2  # yuv420p needs even sides
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self._av = av

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[0] != self.height or rgb.shape[1] != self.width:
            import cv2

            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def finish(self) -> bytes:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        return self.buffer.getvalue()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # closing a half-written stream may complain; the buffer is dropped either way
            pass
        self.buffer = io.BytesIO()


def analyse_video(source: VideoSource, estimator: Any, *, every: int = 5, limits: VideoLimits = VideoLimits(),
                  annotate: bool = True, show_labels: bool = True, progress: ProgressCallback | None = None,
                  tracker: FaceTracker | None = None, scale_tta: bool = False) -> VideoResult:
    """Decode ``source`` frame by frame, analyse every ``every``-th frame with ``estimator`` and the tracker,
    and return per-track summaries and (``annotate``) the annotated video as MP4 bytes.

    ``scale_tta=False`` by default, as on the live page: three framings per face would triple the network time
    for a tenth of a year. Raises :class:`InvalidVideoError`/:class:`VideoTooLargeError` with a clear message.
    """
    if every < 1:
        raise ValueError("every must be at least 1")
    av = _av()
    started = time.perf_counter()
    container, stream, label = _open(source, limits)
    encoder: _Encoder | None = None
    try:
        info = _info(container, stream)
        _check(info, limits, label)
        stream.thread_type = "AUTO"
        tracker = tracker or FaceTracker()
        tracker.reset()
        stats: dict[int, _TrackStats] = {}
        seen: list[Track] = []
        frames = analysed = 0
        t0: float | None = None
        try:
            for frame in container.decode(stream):
                t_abs = frame.time if frame.time is not None else frames / info.fps
                t0 = t_abs if t0 is None else t0
                t = t_abs - t0
                if t > limits.max_duration_s + 0.5:
                    raise VideoTooLargeError(f"{label} runs past {limits.max_duration_s:.0f} s, the limit. Cut it first.")
                if frame.width * frame.height > limits.max_pixels:
                    raise VideoTooLargeError(f"{label} has {frame.width}x{frame.height} frames; the limit is "
                                             f"{limits.max_pixels / 1e6:.1f} megapixels per frame.")
                rgb = frame.to_ndarray(format="rgb24")
                turns = int(round((frame.rotation or 0) / 90)) % 4  # phones store portrait video turned
                if turns:
                    rgb = np.ascontiguousarray(np.rot90(rgb, turns))
                if frames % every == 0:
                    faces = estimator.predict(rgb, keep_crops=False, scale_tta=scale_tta)
                    seen = tracker.update(faces, t=t, frame_size=rgb.shape[:2])
                    for track in seen:
                        stats.setdefault(track.track_id, _TrackStats(t)).add(track, t)
                    analysed += 1
                    drawn = seen
                else:
                    drawn = tracker.predict(seen, t)
                if annotate:
                    if encoder is None:
                        encoder = _Encoder(rgb.shape[1], rgb.shape[0], info.fps)
                    encoder.write(draw_tracks(rgb, drawn, show_labels))
                frames += 1
                if progress is not None and (frames % every == 1 or every == 1):
                    progress(_fraction(t, frames, info), frames, analysed)
        except av.FFmpegError as exc:
            if frames == 0:
                why = getattr(exc, "strerror", None) or exc
                raise InvalidVideoError(f"{label}: no frame could be decoded ({why})") from None
            # A truncated file: keep what was decoded, as a video player would.
        if frames == 0:
            raise InvalidVideoError(f"{label}: the video stream holds no frames")
        data = encoder.finish() if encoder is not None else None
        encoder = None
    finally:
        if encoder is not None:
            encoder.abort()
        container.close()
    if progress is not None:
        progress(1.0, frames, analysed)
    tracks = sorted((s.summary(tid) for tid, s in stats.items()), key=lambda s: (s.first_seen_s, s.track_id))
    return VideoResult(info, tracks, frames, analysed, every, time.perf_counter() - started, data)


def _fraction(t: float, frames: int, info: VideoInfo) -> float:
    if info.duration_s:
        return min(1.0, t / info.duration_s)
    if info.frames:
        return min(1.0, frames / info.frames)
    return 0.0


__all__ = ["InvalidVideoError", "TrackSummary", "VIDEO_SUFFIXES", "VideoInfo", "VideoLimits", "VideoResult",
           "VideoTooLargeError", "analyse_video", "probe_video"]
