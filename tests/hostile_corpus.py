"""A corpus of hostile and unusual inputs, generated at run time from the astronaut (no binary fixtures).

Each :class:`Case` says what a visitor hands over (encoded bytes under a file name, an ndarray or a PIL image)
and what agegender must do with it: decode it (``ok``), or refuse it with an ``InvalidImageError`` (``error``) or
its subclass ``ImageTooLargeError`` (``too_large``). Nothing else may escape, and nothing may abort the process.

Run ``python tests/hostile_corpus.py`` for the outcome table (used for the issue-14 report; the tests import
:func:`cases`). Cases marked ``native`` once aborted the process inside MediaPipe; they are only ever run in a
subprocess.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    category: str
    name: str  # the file name it is uploaded under (bytes cases) or a label
    make: Callable[[], object]
    expect: str  # "ok" | "error" | "too_large"
    native: bool = False

    @property
    def is_file(self) -> bool:
        return self.category not in ("array", "pil", "native-array")


def _astronaut(side: int = 128) -> np.ndarray:
    from skimage import data

    img = data.astronaut()
    return np.ascontiguousarray(img[::512 // side, ::512 // side][:side, :side])


def _enc(img, fmt: str, **kw) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def _png_from_chunks(chunks) -> bytes:
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
                    for t, d in chunks)
    return b"\x89PNG\r\n\x1a\n" + body


def png_claiming(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose IHDR claims ``width`` x ``height`` (a bomb's header; CRC fixed)."""
    chunks = _png_chunks(_enc(Image.new("L", (8, 8)), "PNG"))
    t, d = chunks[0]
    chunks[0] = (t, struct.pack(">II", width, height) + d[8:])
    return _png_from_chunks(chunks)


def _corrupt_idat() -> bytes:
    """A PNG whose image data is damaged in the middle (valid CRCs): a lazy decoder returns a partial picture."""
    chunks = _png_chunks(_enc(_astronaut(), "PNG"))
    out = []
    for t, d in chunks:
        if t == b"IDAT":
            d = d[: len(d) // 2] + bytes(64) + d[len(d) // 2 + 64:]
        out.append((t, d))
    return _png_from_chunks(out)


def _truncated(fmt: str, keep: float = 0.5, **kw) -> Callable[[], bytes]:
    return lambda: (lambda b: b[: int(len(b) * keep)])(_enc(_astronaut(), fmt, **kw))


def mutate(data: bytes, seed: int, n: int = 8) -> bytes:
    """``n`` random bytes written at a random place past the first quarter of ``data`` (seeded)."""
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    at = int(rng.integers(len(data) // 4, len(data)))
    out[at:at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return bytes(out[: len(data)])


def _exif(orientation: int) -> bytes:
    img = Image.fromarray(_astronaut())
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _enc(img, "JPEG", exif=exif.tobytes(), quality=90)


def _la_image() -> Image.Image:
    return Image.fromarray(_astronaut()).convert("LA").convert("La")


def _closed_file_image() -> Image.Image:
    buf = io.BytesIO(_enc(_astronaut(), "PNG"))
    img = Image.open(buf)
    buf.close()
    return img


def _lazy_corrupt_png() -> Image.Image:
    return Image.open(io.BytesIO(_corrupt_idat()))


def _lazy_truncated_jpeg() -> Image.Image:
    return Image.open(io.BytesIO(_truncated("JPEG")()))


def _big_zero_png(width: int, height: int) -> Callable[[], bytes]:
    return lambda: _enc(Image.new("L", (width, height)), "PNG", compress_level=1)


def cases() -> list[Case]:
    a = _astronaut
    c: list[Case] = []
    add = lambda *args, **kw: c.append(Case(*args, **kw))  # noqa: E731

    # Accepted formats and modes, including fake extensions (the content decides).
    for fmt, name, kw in [("JPEG", "photo.jpg", {}), ("PNG", "photo.png", {}), ("WEBP", "photo.webp", {}),
                          ("BMP", "photo.bmp", {}), ("GIF", "photo.gif", {}), ("TIFF", "photo.tif", {}),
                          ("TIFF", "lzw.tiff", {"compression": "tiff_lzw"}),
                          ("TIFF", "jpeg-in.tiff", {"compression": "jpeg"}),
                          ("MPO", "phone.jpg", {"save_all": True, "append_images": [Image.fromarray(a())]}),
                          ("GIF", "animated.gif", {"save_all": True, "append_images": [Image.fromarray(a())]}),
                          ("WEBP", "animated.webp", {"save_all": True, "append_images": [Image.fromarray(a())]}),
                          ("PNG", "png-named.jpg", {}), ("JPEG", "jpeg-named.png", {})]:
        add("accepted", name, (lambda f=fmt, k=kw: _enc(a(), f, **k)), "ok")
    for mode in ("1", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F"):
        add("accepted", f"mode-{mode.replace(';', '')}.{'tif' if mode in ('CMYK', 'I', 'F') else 'png'}",
            (lambda m=mode: _enc(Image.fromarray(a()).convert("L" if m in ("I;16", "I", "F") else "RGB").convert(m),
                                 "TIFF" if m in ("CMYK", "I", "F") else "PNG")), "ok")
    for o in range(1, 9):
        add("exif", f"orientation-{o}.jpg", (lambda o=o: _exif(o)), "ok")

    # Formats we refuse, whatever they are named.
    for fmt, name in [("AVIF", "photo.avif"), ("AVIF", "avif-named.png"), ("QOI", "photo.qoi"),
                      ("JPEG2000", "photo.jp2"), ("ICO", "icon.ico"), ("PDF", "doc.pdf"), ("TGA", "photo.tga"),
                      ("PPM", "photo.ppm"), ("SGI", "photo.sgi"), ("DDS", "tex.dds"), ("PCX", "photo.pcx"),
                      ("IM", "photo.im"), ("ICNS", "icon.icns")]:
        add("refused-format", name, (lambda f=fmt: _enc(a(), f)), "error")
    add("refused-format", "eps-named.jpg", lambda: _enc(a(), "EPS"), "error")
    add("refused-format", "fake.eps", lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "error")
    add("refused-format", "drawing.svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
        "error")

    # Broken files.
    add("corrupt", "empty.jpg", lambda: b"", "error")
    add("corrupt", "notes.png", lambda: b"shopping list: milk, eggs\n" * 10, "error")
    add("corrupt", "page.jpg", lambda: b"<!doctype html><html><body>404</body></html>", "error")
    add("corrupt", "random.jpg", lambda: np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(), "error")
    add("corrupt", "png-signature-only.png", lambda: b"\x89PNG\r\n\x1a\n" + bytes(64), "error")
    add("corrupt", "corrupt-idat.png", _corrupt_idat, "error")
    add("corrupt", "corrupt-avif-named.png", lambda: mutate(_enc(a(), "AVIF"), 0), "error")  # RuntimeError once
    add("corrupt", "truncated-qoi-named.png", _truncated("QOI", keep=0.9), "error")  # IndexError once
    for fmt, ext, kw in [("JPEG", "jpg", {}), ("PNG", "png", {}), ("WEBP", "webp", {}), ("GIF", "gif", {}),
                         ("BMP", "bmp", {}), ("TIFF", "tif", {}), ("TIFF", "tiff", {"compression": "tiff_lzw"}),
                         ("AVIF", "avif.png", {}), ("QOI", "qoi.png", {}), ("JPEG2000", "jp2.png", {})]:
        add("truncated", f"truncated.{ext}", _truncated(fmt, **kw), "error")
    add("truncated", "header-only.jpg", _truncated("JPEG", keep=0.02), "error")

    # Size limits: bombs, > 50 MP, sides that abort native code, extreme aspect ratios.
    add("size", "bomb-8000x7000.png", lambda: png_claiming(8000, 7000), "too_large")
    add("size", "bomb-20000x20000.png", lambda: png_claiming(20000, 20000), "too_large")
    add("size", "bomb-65535x65535.png", lambda: png_claiming(65535, 65535), "too_large")
    add("size", "56mp-1bit.png", lambda: _enc(Image.new("1", (8000, 7000)), "PNG"), "too_large")
    add("size", "huge.gif", lambda: _enc(Image.new("P", (9000, 6000)), "GIF"), "too_large")
    add("size", "pano-33000x1200.png", _big_zero_png(33000, 1200), "too_large", native=True)
    add("size", "strip-32767x1.png", _big_zero_png(32767, 1), "too_large", native=True)
    add("size", "strip-1x32767.png", _big_zero_png(1, 32767), "too_large", native=True)
    add("size", "strip-2000x40.png", _big_zero_png(2000, 40), "error")
    add("size", "tiny-1x1.png", lambda: _enc(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "ok")
    add("size", "tiny-3x2.png", lambda: _enc(Image.new("RGB", (3, 2)), "PNG"), "ok")

    # Arrays (API callers and OpenCV frames).
    for shape, expect in [((1, 32767, 3), "too_large"), ((32767, 1, 3), "too_large"), ((1500, 32767, 3), "too_large"),
                          ((1000, 40000, 3), "too_large"), ((1, 60000, 3), "too_large")]:
        add("native-array", "x".join(map(str, shape)), (lambda s=shape: np.zeros(s, np.uint8)), expect, native=True)
    arrays = [((0, 10, 3), np.uint8, "error"), ((10, 0), np.uint8, "error"), ((10, 10, 2), np.uint8, "error"),
              ((10, 10, 5), np.uint8, "error"), ((10,), np.uint8, "error"), ((2, 10, 10, 3), np.uint8, "error"),
              ((8, 8, 3), np.complex64, "error"), ((8, 8, 3), object, "error"), ((8, 8), "U1", "error"),
              ((8, 8), "datetime64[s]", "error"), ((8, 8, 3), np.float16, "ok"), ((8, 8, 3), ">u2", "ok"),
              ((8, 8, 3), np.int64, "ok"), ((8, 8, 4), np.float64, "ok"), ((8, 8), np.bool_, "ok"),
              ((1, 1, 3), np.uint8, "ok"), ((8, 8, 1), np.uint8, "ok"), ((4, 200, 3), np.uint8, "error")]
    for shape, dtype, expect in arrays:
        add("array", f"{np.dtype(dtype).str}{shape}", (lambda s=shape, d=dtype: np.zeros(s, d)), expect)
    add("array", "nan-float", lambda: np.full((8, 8, 3), np.nan, np.float32), "ok")
    add("array", "inf-float", lambda: np.full((8, 8, 3), np.inf), "ok")

    # PIL images handed over by API callers.
    add("pil", "mode-La", _la_image, "ok")
    add("pil", "mode-RGBa", lambda: Image.fromarray(a()).convert("RGBA").convert("RGBa"), "ok")
    for mode in ("YCbCr", "LAB", "HSV", "I;16", "F", "1", "P", "PA"):
        add("pil", f"mode-{mode}", (lambda m=mode: Image.fromarray(a()).convert(
            "L" if m in ("I;16", "F") else "RGB").convert(m)), "ok")
    add("pil", "closed-file", _closed_file_image, "error")
    add("pil", "lazy-corrupt-png", _lazy_corrupt_png, "error")
    add("pil", "lazy-truncated-jpeg", _lazy_truncated_jpeg, "error")
    add("pil", "lazy-bomb", lambda: Image.open(io.BytesIO(png_claiming(8000, 7000))), "too_large")
    return c


def outcome(source, **kwargs) -> str:
    """'ok', 'error', 'too_large' or 'ESCAPED <type>: <message>' for ``load_image(source)``."""
    from agegender.errors import ImageTooLargeError, InvalidImageError
    from agegender.io.images import load_image

    try:
        out = load_image(source, **kwargs)
    except ImageTooLargeError:
        return "too_large"
    except InvalidImageError:
        return "error"
    except Exception as exc:  # noqa: BLE001 - what the corpus is looking for
        return f"ESCAPED {type(exc).__name__}: {str(exc)[:80]}"
    ok = isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    return "ok" if ok and out.flags["C_CONTIGUOUS"] else f"BAD OUTPUT {getattr(out, 'shape', None)}"


def _native_child(name: str) -> None:
    """Run one native case fully (decode and detection) in this process: the parent watches the exit status."""
    from agegender.detection.detector import FaceDetector

    from agegender.io.images import load_image

    case = next(k for k in cases() if k.name == name)
    source = case.make()
    got = outcome(source)
    print("load_image:", got, flush=True)
    det = FaceDetector("auto")
    if isinstance(source, np.ndarray):  # direct callers of the detector skip load_image's checks
        print("detect:", type(det.detect(source)).__name__, flush=True)
    elif got == "ok":  # what the app and the CLI do next with a decoded file
        print("detect:", type(det.detect(load_image(source))).__name__, flush=True)


if __name__ == "__main__":
    import os
    import subprocess
    import sys
    from collections import Counter

    if len(sys.argv) == 3 and sys.argv[1] == "--native":
        _native_child(sys.argv[2])
        sys.exit(0)
    table: Counter = Counter()
    for case in cases():
        if case.native:
            proc = subprocess.run([sys.executable, __file__, "--native", case.name], capture_output=True, text=True,
                                  env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
            got = proc.stdout.strip().replace("\n", "; ") if proc.returncode == 0 else f"CRASH rc={proc.returncode}"
        else:
            got = outcome(case.make())
        good = got == case.expect or (case.native and got.startswith(f"load_image: {case.expect}"))
        table[(case.category, "as expected" if good else "WRONG")] += 1
        if not good:
            print(f"{case.category:15s} {case.name:28s} expected {case.expect:10s} got {got}")
    for (cat, verdict), n in sorted(table.items()):
        print(f"{cat:15s} {verdict:12s} {n}")
    print("total", sum(table.values()))
