"""Exceptions raised by agegender.

Callers (the CLI, the Streamlit pages, user code) catch one base class and show its message, instead of having
to know which of PIL, OpenCV, MediaPipe or torch failed underneath.
"""

from __future__ import annotations


class AgeGenderError(Exception):
    """Base class: every error this package raises on purpose derives from it."""


class InvalidImageError(AgeGenderError, ValueError):
    """The input is not a decodable image (corrupt bytes, a text file, an unsupported array)."""


class ImageTooLargeError(InvalidImageError):
    """The image has more pixels than we are willing to decode (decompression-bomb guard)."""


class WeightsError(AgeGenderError, RuntimeError):
    """A bundled weights file is missing, fails its sha256 check or does not match its architecture."""
