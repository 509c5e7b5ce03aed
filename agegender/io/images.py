"""Turn whatever a user hands us into one thing: an RGB ``uint8`` array of shape (H, W, 3).

Everything downstream (detector, crops, model, annotation) relies on that single format, so every conversion
(EXIF orientation, palette/alpha/CMYK/16-bit modes, BGR arrays from OpenCV) happens here and only here.

Hostile input is expected: a visitor's upload reaches this module first. So

* only the formats in :data:`ACCEPTED_FORMATS` are decoded (``Image.open(..., formats=...)``): content sniffing
  must not reach Pillow's other plugins (EPS would run Ghostscript, and every rarely used decoder is attack
  surface);
* the size limits of :mod:`agegender.io.limits` are checked on the header, before a pixel is decoded;
* *any* exception a decoder raises (each plugin has its own: ``OSError``, ``RuntimeError``, ``IndexError``,
  ``struct.error`` ...) becomes :class:`~agegender.errors.InvalidImageError` with the input's name and one line
  of reason, and a truncated file is an error, never a silently partial picture.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from agegender.errors import ImageTooLargeError, InvalidImageError
from agegender.io.limits import MAX_PIXELS, check_image_size

__all__ = ["ACCEPTED_FORMATS", "ACCEPTED_SUFFIXES", "MAX_PIXELS", "ImageInput", "load_image"]

ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
"""Pillow format ids we decode: what cameras, phones, browsers and scanners write (a phone's MPO, a JPEG with
extra frames, is opened by the JPEG plugin; its first frame is used). Everything else (AVIF, HEIC, QOI, JPEG 2000, EPS, PSD, ICO ...) is refused with a message naming it."""

ACCEPTED_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
"""File name suffixes of :data:`ACCEPTED_FORMATS`, for the uploader's ``type=`` and the CLI's folder scan. The
suffix is only a hint: the content decides (a PNG named ``.jpg`` is read as a PNG)."""

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

# Magic bytes of formats we refuse, so the message can say what the file is instead of "not an image".
_REFUSED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftypavif", "AVIF"), (4, b"ftypavis", "AVIF"), (4, b"ftypheic", "HEIC"), (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"), (4, b"ftypmsf1", "HEIF"), (0, b"qoif", "QOI"), (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"), (0, b"%!PS", "PostScript/EPS"), (0, b"\xc5\xd0\xd3\xc6", "EPS"),
    (0, b"%PDF", "PDF"), (0, b"8BPS", "Photoshop (PSD)"), (0, b"\x00\x00\x01\x00", "ICO"), (0, b"<svg", "SVG"),
    (0, b"<?xml", "XML/SVG"), (0, b"DDS ", "DDS"), (0, b"\x00\x00\x00 ftyp", "video/ISO media"),
)
_ACCEPTED_NAMES = "JPEG, PNG, WebP, BMP, GIF or TIFF"


def load_image(source: ImageInput, *, bgr: bool = False, max_pixels: int = MAX_PIXELS, name: str | None = None,
               ) -> np.ndarray:
    """Decode ``source`` into a C-contiguous RGB uint8 array.

    ``source`` may be a path, encoded bytes, a file-like object, a PIL image or an ndarray. Arrays are taken as
    RGB unless ``bgr=True`` (OpenCV frames); gray arrays and 4-channel arrays are accepted, 16-bit and float
    arrays are rescaled. EXIF orientation is applied so boxes match what an image viewer shows.
    Raises :class:`InvalidImageError` (or its subclass :class:`ImageTooLargeError`) and nothing else for bad input;
    ``name`` is the file name its messages give encoded bytes (a file read elsewhere, e.g. by a batch engine).
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, bgr=bgr, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        return _convert_pil(source, "the image", max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) == 0:
            raise InvalidImageError(f"{name}: empty file (0 bytes), not an image" if name else
                                    "empty input: 0 bytes, not an image")
        return _open_and_convert(io.BytesIO(data), name or "the uploaded data", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"{path}: no such file")
        try:
            if path.stat().st_size == 0:
                raise InvalidImageError(f"{path.name}: empty file (0 bytes), not an image")
        except OSError as exc:
            raise InvalidImageError(f"{path.name}: cannot be read ({exc.strerror or type(exc).__name__})") from None
        return _open_and_convert(path, path.name, max_pixels)
    if hasattr(source, "read"):
        return _open_and_convert(source, Path(str(getattr(source, "name", "the stream"))).name, max_pixels)
    raise InvalidImageError(f"cannot read an image from a {type(source).__name__}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _refused_format(fp, start: int) -> str | None:
    """Name of a known but refused format from the bytes of ``fp`` at ``start``, else None."""
    try:
        if isinstance(fp, Path):
            with open(fp, "rb") as fh:
                head = fh.read(16)
        else:
            fp.seek(start)
            head = fp.read(16)
    except Exception:  # an unseekable stream: the generic message will do
        return None
    if not isinstance(head, bytes):
        return None
    for offset, magic, name in _REFUSED_SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    return None


def _open_and_convert(fp, label: str, max_pixels: int) -> np.ndarray:
    try:
        start = 0 if isinstance(fp, Path) else fp.tell()
    except Exception:  # an unseekable stream
        start = 0
    try:
        with warnings.catch_warnings():
            # PIL's own bomb guard warns (or raises) at ~89 MP; ours is stricter and gives a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", "Corrupt EXIF", UserWarning)  # the EXIF block is optional
            image = Image.open(fp, formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageTooLargeError(f"{label}: image is too large to decode safely (over Pillow's bomb limit)") from None
    except UnidentifiedImageError:
        other = _refused_format(fp, start)
        if other:
            raise InvalidImageError(f"{label}: {other} images are not accepted; use {_ACCEPTED_NAMES}") from None
        raise InvalidImageError(f"{label}: not an image file in an accepted format ({_ACCEPTED_NAMES})") from None
    except MemoryError:
        raise ImageTooLargeError(f"{label}: not enough memory to open this image") from None
    except Exception as exc:  # any plugin, any exception type: see the module docstring
        raise InvalidImageError(f"{label}: the image is corrupt or truncated ({_one_line(exc)})") from None
    try:
        return _convert_pil(image, label, max_pixels)
    finally:
        image.close()


def _convert_pil(image: Image.Image, label: str, max_pixels: int) -> np.ndarray:
    """Check the size, decode every pixel (so truncation shows now, as an error) and convert to RGB."""
    check_image_size(image.width, image.height, max_pixels, label)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Some library in the process asked Pillow to fill truncated files with grey; we never want that.
        raise InvalidImageError(f"{label}: refused because PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this "
                                "process (a truncated file would decode as a partial picture)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", "Corrupt EXIF", UserWarning)  # the EXIF block is optional
            image.load()
            return _pil_to_rgb(image)
    except (ImageTooLargeError, InvalidImageError):
        raise
    except Image.DecompressionBombError:
        raise ImageTooLargeError(f"{label}: image is too large to decode safely (over Pillow's bomb limit)") from None
    except MemoryError:
        raise ImageTooLargeError(f"{label}: not enough memory to decode this image") from None
    except ValueError as exc:
        if "closed" in str(exc):
            raise InvalidImageError(f"{label}: its file was closed before the pixels were read") from None
        raise InvalidImageError(f"{label}: the image cannot be converted ({_one_line(exc)})") from None
    except Exception as exc:  # any plugin, any exception type: see the module docstring
        raise InvalidImageError(f"{label}: the image is corrupt or truncated ({_one_line(exc)})") from None


_PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8 array of a loaded PIL image, upright. Copies as little as it can: a 49 MP photo is 147 MB per
    copy, and ``exif_transpose`` copies even an image that needs no turning."""
    try:
        if image.getexif().get(0x0112, 1) in (2, 3, 4, 5, 6, 7, 8):
            image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not cost the user the picture
        pass
    mode = image.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if mode in _PREMULTIPLIED:
        image = image.convert(_PREMULTIPLIED[mode])
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
    check_image_size(arr.shape[1], arr.shape[0], max_pixels, f"array of shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "u" and arr.dtype.itemsize == 1:
        out = arr
    elif kind == "u" and arr.dtype.itemsize == 2:  # any byte order
        out = (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif kind == "b":
        out = arr.astype(np.uint8) * 255
    elif kind == "f":
        out = _float_to_uint8_rgb(arr)
        if arr.ndim == 3 and arr.shape[2] == 4:
            out = out[..., :3]
        return np.ascontiguousarray(out[..., ::-1] if bgr else out)
    elif kind in "iu":
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
