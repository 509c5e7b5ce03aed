"""Turn whatever a user hands us into one thing: an RGB ``uint8`` array of shape (H, W, 3).

Everything downstream (detector, crops, model, annotation) relies on that single format, so every conversion
(EXIF orientation, palette/alpha/CMYK/16-bit modes, BGR arrays from OpenCV) happens here and only here.
Failures surface as :class:`~agegender.errors.InvalidImageError` with a message a person can act on.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageTooLargeError, InvalidImageError

MAX_PIXELS = 50_000_000
"""Images above 50 megapixels are refused: decoding one costs > 150 MB and no face needs that resolution."""

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


def load_image(source: ImageInput, *, bgr: bool = False, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``source`` into a C-contiguous RGB uint8 array.

    ``source`` may be a path, encoded bytes, a file-like object, a PIL image or an ndarray. Arrays are taken as
    RGB unless ``bgr=True`` (OpenCV frames); gray arrays and 4-channel arrays are accepted, 16-bit and float
    arrays are rescaled. EXIF orientation is applied so boxes match what an image viewer shows.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, bgr=bgr, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, max_pixels)
        return _pil_to_rgb(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidImageError("empty input: 0 bytes, not an image")
        return _open_and_convert(io.BytesIO(bytes(source)), "the uploaded data", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"{path}: no such file")
        return _open_and_convert(path, str(path), max_pixels)
    if hasattr(source, "read"):
        return _open_and_convert(source, getattr(source, "name", "the stream"), max_pixels)
    raise InvalidImageError(f"cannot read an image from a {type(source).__name__}")


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is "
            f"{max_pixels / 1e6:.0f} megapixels. Downscale it first."
        )
    if width < 1 or height < 1:
        raise InvalidImageError(f"image has no pixels ({width}x{height})")


def _open_and_convert(fp, label: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # PIL's own bomb guard warns (or raises) at ~89 MP; ours is stricter and gives a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp)
            _check_size(image.width, image.height, max_pixels)
            image.load()
    except (ImageTooLargeError, InvalidImageError):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{label}: image is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise InvalidImageError(f"{label}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"{label}: the image is corrupt or truncated ({exc})") from None
    return _pil_to_rgb(image)


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not cost the user the picture
        pass
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        return _float_to_uint8_rgb(arr)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Composite on white: transparent pixels are usually "background", and black would read as hair/shadow.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _float_to_uint8_rgb(arr: np.ndarray) -> np.ndarray:
    finite = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    scale = 255.0 if finite.max(initial=0) <= 1.0 else 1.0
    arr8 = np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    if arr8.ndim == 2:
        arr8 = np.repeat(arr8[..., None], 3, axis=2)
    return np.ascontiguousarray(arr8)


def _array_to_rgb(arr: np.ndarray, *, bgr: bool, max_pixels: int) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InvalidImageError(f"array of shape {arr.shape} is not an image (expected HxW, HxWx3 or HxWx4)")
    _check_size(arr.shape[1], arr.shape[0], max_pixels)
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        out = _float_to_uint8_rgb(arr)
        if arr.ndim == 3 and arr.shape[2] == 4:
            out = out[..., :3]
        return np.ascontiguousarray(out[..., ::-1]) if bgr else out
    elif np.issubdtype(arr.dtype, np.integer):
        out = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise InvalidImageError(f"array of dtype {arr.dtype} is not an image")
    if out.ndim == 2:
        return np.ascontiguousarray(np.repeat(out[..., None], 3, axis=2))
    if out.shape[2] == 4:
        alpha = out[..., 3:4].astype(np.float32) / 255.0
        out = (out[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    if bgr:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)
