"""Video files (MP4, WebM, MOV, AVI, MKV, MPEG-TS): every face followed through the clip, an annotated copy, one row per person.

Why streaming: a minute of 720p video is ~1.6 GB of raw frames, so frames are decoded one at a time with PyAV
(FFmpeg), analysed or drawn, encoded and dropped; memory stays at a few frames plus the compressed output.
Why every k-th frame: on a CPU the detector and network take ~50-100 ms per frame, slower than the video plays.
The analysed frames feed the live page's tracker (:mod:`agegender.video.tracking`), which smooths the labels and
moves each box with its track's velocity on the frames in between, so the annotated video stays fluid.

Privacy: the input may be bytes or a file object (an upload held in memory) and the annotated MP4 (H.264) is
encoded into a ``BytesIO``; nothing is written to disk unless the caller saves ``VideoResult.annotated``.
Limits (file size, duration, frame size) are checked before decoding where the header tells, and again while
decoding, each with a message that says what to do.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from agegender.groups import age_interval, expected_age
from agegender.video.tracking import FaceTracker, Track, draw_tracks
from agegender.io.video import (VIDEO_SUFFIXES, InvalidVideoError, MP4Encoder, VideoInfo, VideoLimits, VideoSource,
                       VideoTooLargeError, av_module, check_limits, open_video, probe_video, read_info)

ProgressCallback = Callable[[float, int, int], None]  # (fraction done, frames decoded, frames analysed)


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

    def people(self, min_frames: int = 2) -> list[TrackSummary]:
        """Tracks seen in at least ``min_frames`` analysed frames. A detector's false positive (a patch, a
        pattern) rarely survives two analyses at the same place, while a real face does; ``min_frames=1``
        keeps everything."""
        return [t for t in self.tracks if t.frames >= min_frames]

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
    av = av_module()
    started = time.perf_counter()
    container, stream, label = open_video(source, limits)
    encoder: MP4Encoder | None = None
    try:
        info = read_info(container, stream)
        check_limits(info, limits, label)
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
                        encoder = MP4Encoder(rgb.shape[1], rgb.shape[0], info.fps)
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
