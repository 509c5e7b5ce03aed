"""Sample pictures for the upload page, so a visitor sees results without a photo of their own.

Built at runtime from scikit-image's astronaut (public domain, NASA; shipped inside scikit-image, nothing is
downloaded): the portrait itself and mosaics of it that stand in for a group photo. No file is written.
"""

from __future__ import annotations

import functools
import io

import cv2
import numpy as np
from PIL import Image

SAMPLES: dict[str, str] = {  # name (used as the file name) -> button label
    "astronaut.png": "Astronaut (1 face)",
    "astronaut_group.png": "Group of six (mosaic)",
    "astronaut_crowd.png": "Crowd of 16 (mosaic)",
}


def available() -> bool:
    """Whether scikit-image (which holds the astronaut) is installed."""
    try:
        from skimage import data  # noqa: F401
    except ImportError:
        return False
    return True


def _astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def _mosaic(rows: int, cols: int, cell: int) -> np.ndarray:
    """``rows × cols`` copies of the astronaut, ``cell`` px each, every other one mirrored (to look less alike)."""
    base = cv2.resize(_astronaut(), (cell, cell), interpolation=cv2.INTER_AREA)
    tiles = [base if (r + c) % 2 == 0 else base[:, ::-1] for r in range(rows) for c in range(cols)]
    grid = [np.hstack(tiles[r * cols:(r + 1) * cols]) for r in range(rows)]
    return np.ascontiguousarray(np.vstack(grid))


@functools.lru_cache(maxsize=len(SAMPLES))
def sample_image(name: str) -> np.ndarray:
    """The RGB pixels of sample ``name`` (a key of :data:`SAMPLES`)."""
    if name == "astronaut.png":
        return _astronaut()
    if name == "astronaut_group.png":
        return _mosaic(2, 3, 320)
    if name == "astronaut_crowd.png":
        return _mosaic(4, 4, 240)
    raise KeyError(name)


@functools.lru_cache(maxsize=len(SAMPLES))
def sample_png(name: str) -> bytes:
    """Sample ``name`` encoded as PNG: it goes through the same path as an uploaded file."""
    buf = io.BytesIO()
    Image.fromarray(sample_image(name)).save(buf, format="PNG")
    return buf.getvalue()
