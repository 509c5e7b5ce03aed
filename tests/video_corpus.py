"""A corpus of hostile and unusual videos, generated at run time (no binary fixtures), for the CLI,
``analyse_video`` and the Video file page.

Each :class:`VideoCase` is a file name, its bytes and what must happen to it: ``analyse_video`` (the content
decides: a JPEG under a ``.mp4`` name is a one-frame video to FFmpeg) and the CLI and the Video file page (the name
decides the route: ``.jpg``/``.gif`` go to the image reader, the page allows video types only). ``ok`` means
analysed, with ``tracks`` people where given; ``error`` means refused with an ``AgeGenderError`` whose one-line
message holds ``reason``; nothing else may escape. ``large`` cases get their peak memory measured.
Run ``python tests/video_corpus.py`` for the outcome table.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class VideoCase:
    name: str  # the file name it is handed over under
    make: Callable[[], bytes]
    expect: str  # analyse_video: "ok" | "error"
    tracks: int | None = None  # for "ok": the people (tracks seen twice or more) it must give; None: not checked
    large: bool = False  # measure peak memory
    reason: str = ""  # for "error": a phrase of the message
    by_name: str | None = None  # the CLI's outcome where the file name routes it elsewhere (default: ``expect``)
    by_name_reason: str = ""

    @property
    def cli_expect(self) -> str:
        return self.by_name or self.expect

    @property
    def cli_reason(self) -> str:
        return self.by_name_reason or self.reason


def _astronaut(side: int) -> np.ndarray:
    from skimage import data

    return cv2.resize(np.ascontiguousarray(data.astronaut()), (side, side), interpolation=cv2.INTER_AREA)


def encode(frames, size: tuple[int, int], fps: int = 10, fmt: str = "mp4", codec: str = "libx264") -> bytes:
    """RGB frames as an in-memory video."""
    import av

    width, height = size
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def black_16(seconds: int, fps: int = 2) -> bytes:
    """A black 16x16 video (a covered webcam, a black intro) lasting ``seconds``."""
    black = np.zeros((16, 16, 3), np.uint8)
    return encode((black for _ in range(seconds * fps)), (16, 16), fps=fps)


def astronaut_clip(frames: int = 12, size: tuple[int, int] = (320, 240), fmt: str = "mp4",
                   codec: str = "libx264") -> bytes:
    """The astronaut (a face) still in the middle of a grey frame."""
    w, h = size
    side = min(w, h) * 3 // 4
    img = np.full((h, w, 3), 90, np.uint8)
    img[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side] = _astronaut(side)
    return encode((img for _ in range(frames)), size, fmt=fmt, codec=codec)


def audio_only() -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 0.3).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def rotated(turn: int = 90) -> bytes:
    """The astronaut clip stored on its side with a display matrix saying "turn by ``turn``°", as phones store
    portrait video: the track header's (tkhd) matrix is rewritten in place."""
    w, h = 320, 240
    upright = np.full((w, h, 3), 90, np.uint8)  # portrait 240x320 as displayed
    upright[40:40 + 200, 20:20 + 200] = _astronaut(200)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # 320x240 on disk, turned counter-clockwise
    data = bytearray(encode((stored for _ in range(10)), (w, h)))
    at = data.find(b"tkhd")
    version = data[at + 4]
    matrix_at = at + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    one, minus_one = 0x00010000, 0xFFFF0000  # 16.16 fixed point; the last column is 2.30
    cos, sin = {90: (0, one), 270: (0, minus_one), 180: (minus_one, 0)}[turn]
    neg_sin = (-(sin - (1 << 32)) if sin & 0x80000000 else -sin) & 0xFFFFFFFF
    data[matrix_at:matrix_at + 36] = struct.pack(">9I", cos, sin, 0, neg_sin, cos, 0, 0, 0, 0x40000000)
    return bytes(data)


def size_change() -> bytes:
    """MPEG-TS segments of 320x240 and 640x360 back to back: the frame size changes mid-stream (a broadcast or a
    screen recording does this); each segment shows the astronaut."""
    return astronaut_clip(8, (320, 240), fmt="mpegts") + astronaut_clip(8, (640, 360), fmt="mpegts")


def long_gif(frames: int = 3000) -> bytes:
    """An animated GIF of thousands of 32x32 frames (a GIF bomb in frame count, small in bytes)."""
    imgs = [Image.fromarray(np.full((32, 32, 3), (i * 7) % 256, np.uint8)) for i in range(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=20, loop=0)
    return buf.getvalue()


def video_8k() -> bytes:
    black = np.zeros((4320, 7680, 3), np.uint8)
    return encode([black, black], (7680, 4320), fps=1)


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_astronaut(256)).save(buf, format="JPEG")
    return buf.getvalue()


def cases() -> list[VideoCase]:
    rng = np.random.default_rng(31)
    return [
        VideoCase("zero-byte.mp4", lambda: b"", "error", reason="empty"),
        VideoCase("random-bytes.mp4", lambda: rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes(), "error",
                  reason="not a video file"),
        VideoCase("half-truncated.mp4", lambda: (lambda b: b[: len(b) // 2])(astronaut_clip()), "error"),
        VideoCase("audio-only.mp4", audio_only, "error", reason="no video"),
        VideoCase("video-8k.mp4", video_8k, "error", large=True, reason="megapixels"),
        VideoCase("photo-renamed.mp4", _jpeg, "ok", tracks=0),  # one frame: a face, but no one seen twice
        VideoCase("video-renamed.jpg", astronaut_clip, "ok", tracks=1, by_name="error", by_name_reason="not accepted"),
        VideoCase("black-16px-10min.mp4", lambda: black_16(600), "ok", tracks=0, large=True),
        VideoCase("size-change.ts", size_change, "ok", tracks=2),  # a new frame size starts new tracks
        VideoCase("thousands-of-frames.gif", long_gif, "ok", tracks=0, large=True),
        VideoCase("rotated-portrait.mp4", rotated, "ok", tracks=1),
        VideoCase("astronaut.mp4", astronaut_clip, "ok", tracks=1),
    ]


if __name__ == "__main__":  # the outcome table
    import time

    from agegender import AgeGenderError, Estimator
    from agegender.video.analysis import VideoLimits, analyse_video

    est = Estimator()
    for case in cases():
        data, t = case.make(), time.perf_counter()
        try:
            r = analyse_video(data, est, annotate=False, limits=VideoLimits(max_duration_s=900))
            outcome = f"{len(r.tracks)} tracks, {r.frames} frames ({r.frames_analysed} analysed)"
        except AgeGenderError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        print(f"{case.name:28s} {len(data):>10,d} B {time.perf_counter() - t:6.2f} s  {outcome}")
