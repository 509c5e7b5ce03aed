"""Input limits: what an image may look like before any native code (Pillow's decoders, OpenCV, MediaPipe) sees it.

Why a module of its own: the limits are one policy shared by the decoder (:mod:`agegender.io.images`), the detector
(:mod:`agegender.detection.detector`), the CLI and the app, and a visitor's upload must hit them *before* a C++ library
can abort the whole process. MediaPipe's image converter calls OpenCV's ``remap``, which asserts
``dst.cols < SHRT_MAX``: any frame with a side of 32,767 px or more raises SIGABRT and kills the Streamlit server
with every visitor's session. We keep a wide margin below that.

Isolation decision: agegender does **not** run native code in a worker process. Every known abort is a size or
shape the checks here refuse (or the detector downscales, see ``FaceDetector.detect``) before native code runs,
and ``tests/test_hostile_inputs.py`` replays them in a subprocess so a regression fails a test rather than a
server. A worker process per request would cost a process start plus a model load (~0.3 s) or a pool with a
copy of every image through a pipe, on the hot path of every upload, for crashes we no longer know of.
"""

from __future__ import annotations

from agegender.errors import ImageTooLargeError, InvalidImageError

MAX_PIXELS = 50_000_000
"""Images above 50 megapixels are refused: decoding one costs > 150 MB and no face needs that resolution."""

MAX_SIDE = 20_000
"""Longest accepted side in pixels. Native code aborts at 32,767 px; no single camera frame reaches 20,000 px."""

MAX_ASPECT_RATIO = 20.0
"""Longest side / shortest side. A strip thinner than 1:20 holds no face worth an age estimate, and it would make
the tiled detector run hundreds of passes over nothing."""

NATIVE_SIDE_LIMIT = 32_767
"""Sides at or above this abort OpenCV inside MediaPipe (SHRT_MAX); the detector never hands MediaPipe such a frame."""


def check_image_size(width: int, height: int, max_pixels: int = MAX_PIXELS, label: str = "image") -> None:
    """Raise :class:`ImageTooLargeError` / :class:`InvalidImageError` for a size no part of agegender accepts.

    ``label`` names the input in the message (a file name, "the uploaded data") so a batch shows which file failed.
    """
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise InvalidImageError(f"{label} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{label} is {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is "
            f"{max_pixels / 1e6:.0f} megapixels. Downscale it first."
        )
    if max(width, height) > MAX_SIDE:
        raise ImageTooLargeError(
            f"{label} is {width}x{height}; the limit is {MAX_SIDE:,} pixels per side. Downscale it first."
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise InvalidImageError(
            f"{label} is {width}x{height}, an aspect ratio beyond {MAX_ASPECT_RATIO:.0f}:1; crop it to the part "
            "with the faces."
        )
