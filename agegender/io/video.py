"""Reading and writing video files for :mod:`agegender.video.analysis`: limits, header checks, streaming decode, H.264 out.

PyAV (FFmpeg) decodes and encodes; this module only turns its failures into :class:`InvalidVideoError` with a
message a person can act on, and checks the limits before a frame is decoded where the header tells. The encoder
writes an MP4 into a ``BytesIO``: nothing reaches the disk unless the caller saves the bytes.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Union

import numpy as np

from agegender.errors import AgeGenderError


VIDEO_SUFFIXES = (".mp4", ".m4v", ".webm", ".mov", ".avi", ".mkv", ".ts", ".mts", ".m2ts")
VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]


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


def av_module():
    """PyAV, imported on first use so that image-only users never load FFmpeg."""
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


def open_video(source: VideoSource, limits: VideoLimits):
    """The opened container and its first video stream, or a clear error."""
    av = av_module()
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


def read_info(container, stream) -> VideoInfo:
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


def check_limits(info: VideoInfo, limits: VideoLimits, label: str) -> None:
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
    container, stream, label = open_video(source, limits)
    try:
        info = read_info(container, stream)
        check_limits(info, limits, label)
        return info
    finally:
        container.close()


class MP4Encoder:
    """H.264 MP4 into memory: plays in every browser and is small (CRF 23, ``veryfast`` for CPU time)."""

    def __init__(self, width: int, height: int, fps: float):
        av = av_module()
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


__all__ = ["InvalidVideoError", "MP4Encoder", "VIDEO_SUFFIXES", "VideoInfo", "VideoLimits", "VideoSource",
           "VideoTooLargeError", "check_limits", "open_video", "probe_video", "read_info"]
