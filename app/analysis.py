"""One uploaded file → an :class:`ImageResult`, within the app's limits; a per-session cache makes reruns free.

Limits (each gives the visitor a message rather than a slow or dead server):

* :data:`MAX_UPLOAD_MB` per file (checked before decoding), :data:`MAX_FILES_PER_BATCH` files per upload,
  :data:`MAX_BATCH_MEGAPIXELS` decoded pixels per upload (checked from the file header before decoding),
  faces per image (:data:`app.estimator_cache.MAX_FACES_PER_IMAGE`);
* only a downscaled copy of each picture (:data:`DISPLAY_MAX_SIDE`) is kept in the session, never the decoded
  original, and the session cache is bounded by :data:`CACHE_MAX_BYTES`.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import streamlit as st
from PIL import Image

from agegender import AgeGenderError, Estimator, Face, load_image

from .settings import Settings

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp"]
UPLOAD_TYPES_TEXT = "JPG, PNG, WebP or BMP"
MAX_UPLOAD_MB = 25  # keep in step with server.maxUploadSize in .streamlit/config.toml
MAX_FILES_PER_BATCH = 50
MAX_BATCH_MEGAPIXELS = 300  # about 25 twelve-megapixel photos per upload
DISPLAY_MAX_SIDE = 1600  # what the session keeps and the browser gets (the annotated zip has this size too)
CACHE_MAX_BYTES = 200 * 1024 * 1024  # downscaled pictures and face chips kept per session for cheap reruns


@dataclass
class ImageResult:
    """One analysed image (or why it could not be analysed). Only the downscaled ``display`` copy is kept;
    ``width``/``height`` are the original's, ``faces`` have boxes in original pixels."""

    name: str
    digest: str
    display: np.ndarray | None = field(default=None, repr=False)
    width: int | None = None
    height: int | None = None
    faces: list[Face] = field(default_factory=list)
    error: str | None = None

    @property
    def scale(self) -> float:
        """Display pixels per original pixel (1.0 for pictures no larger than :data:`DISPLAY_MAX_SIDE`)."""
        if self.display is None or not self.width:
            return 1.0
        return self.display.shape[1] / self.width

    @property
    def megapixels(self) -> float:
        return (self.width or 0) * (self.height or 0) / 1e6

    @property
    def nbytes(self) -> int:
        crops = sum(f.crop.nbytes for f in self.faces if f.crop is not None)
        return (self.display.nbytes if self.display is not None else 0) + crops


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def display_image(rgb: np.ndarray) -> np.ndarray:
    """Downscaled copy for the session and the browser: a 24 MP photo need not stay in memory or travel over
    the websocket in full."""
    h, w = rgb.shape[:2]
    scale = DISPLAY_MAX_SIDE / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def unsupported_type(name: str) -> str | None:
    """Why a file name's type is refused, or ``None``. The uploader accepts every type on purpose: its own
    filter drops other files in the browser without a word, so the page could not say what happened."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix and suffix not in UPLOAD_TYPES:
        return f".{suffix} files are not supported: upload {UPLOAD_TYPES_TEXT} images"
    return None


def header_megapixels(data: bytes) -> float | None:
    """The picture's size from its header, without decoding it (``None`` if Pillow cannot tell)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.width * im.height / 1e6
    except Exception:  # noqa: BLE001 - any failure here is reported by load_image's own, better message
        return None


def analyse_bytes(data: bytes, name: str, estimator: Estimator, max_bytes: int = MAX_UPLOAD_MB * 1024 * 1024,
                  digest: str | None = None) -> ImageResult:
    """Decode and analyse one uploaded file; never raises for a bad file (the error is in the result)."""
    digest = digest or digest_of(data)
    refused = unsupported_type(name)
    if refused:
        return ImageResult(name, digest, error=refused)
    if len(data) > max_bytes:
        return ImageResult(name, digest, error=f"the file is {len(data) / 1e6:.1f} MB, over the "
                                               f"{max_bytes / 1024 / 1024:.0f} MB limit")
    try:
        rgb = load_image(data)
        faces = estimator.predict(rgb)
    except AgeGenderError as exc:
        return ImageResult(name, digest, error=_clean_error(exc))
    return ImageResult(name, digest, display=display_image(rgb), width=int(rgb.shape[1]),
                       height=int(rgb.shape[0]), faces=faces)


def _clean_error(exc: Exception) -> str:
    return str(exc).removeprefix("the uploaded data: ")


def analyse_cached(data: bytes, name: str, estimator: Estimator, settings: Settings) -> ImageResult:
    """``analyse_bytes`` memoised in this session by (content hash, estimator settings): reruns (a new preset,
    a click on a download button) cost nothing. Bounded by CACHE_MAX_BYTES, oldest first out."""
    cache: OrderedDict = st.session_state.setdefault("_analysis_cache", OrderedDict())
    digest = digest_of(data)
    key = (digest, settings.estimator_key, estimator.model_name)  # a consensus panel is another estimator
    if key in cache:
        cache.move_to_end(key)
        hit: ImageResult = cache[key]
        return replace(hit, name=name)
    result = analyse_bytes(data, name, estimator, digest=digest)
    cache[key] = result
    total = sum(r.nbytes for r in cache.values())
    while total > CACHE_MAX_BYTES and len(cache) > 1:
        _, old = cache.popitem(last=False)
        total -= old.nbytes
    return result


class BatchBudget:
    """The decoded-pixel budget of one upload: files past it are refused with a message, not decoded."""

    def __init__(self, megapixels: float | None = None):
        self.limit = float(MAX_BATCH_MEGAPIXELS if megapixels is None else megapixels)
        self.used = 0.0

    def refuse(self, data: bytes) -> str | None:
        """Why this file would go over the budget, or ``None`` (then its pixels are counted)."""
        mp = header_megapixels(data)
        if mp is None:
            return None
        if self.used + mp > self.limit:
            return (f"not analysed: this upload is over its {self.limit:g}-megapixel budget "
                    f"({self.used:.0f} MP so far, this picture {mp:.1f} MP). Upload it in another batch.")
        self.used += mp
        return None


def regroup(result: ImageResult, estimator: Estimator, preset: str) -> list[Face]:
    """The result's faces under ``preset`` (cheap: sums of the 101 bins, no network)."""
    return estimator.with_groups(result.faces, preset)
