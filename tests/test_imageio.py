"""load_image: every supported input becomes RGB uint8 (H, W, 3); everything else is an InvalidImageError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from agegender import AgeGenderError, ImageTooLargeError, InvalidImageError, load_image
from agegender.io.images import MAX_PIXELS

from conftest import encode


def assert_rgb8(arr: np.ndarray, shape: tuple[int, int]) -> None:
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint8
    assert arr.shape == (*shape, 3)
    assert arr.flags["C_CONTIGUOUS"]


# ----------------------------------------------------------------------------------------------- accepted inputs
def test_path_str_and_pathlike(tmp_path, astronaut):
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    for source in (path, str(path)):
        out = load_image(source)
        assert_rgb8(out, (512, 512))
        np.testing.assert_array_equal(out, astronaut)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
def test_encoded_bytes(astronaut, wrap):
    out = load_image(wrap(encode(astronaut, "PNG")))
    np.testing.assert_array_equal(out, astronaut)


def test_file_objects(tmp_path, astronaut):
    data = encode(astronaut, "PNG")
    np.testing.assert_array_equal(load_image(io.BytesIO(data)), astronaut)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    with open(path, "rb") as fh:
        np.testing.assert_array_equal(load_image(fh), astronaut)


def test_pil_image(astronaut):
    out = load_image(Image.fromarray(astronaut))
    np.testing.assert_array_equal(out, astronaut)


def test_rgb_array_is_kept_and_bgr_flag_flips_channels(astronaut):
    np.testing.assert_array_equal(load_image(astronaut), astronaut)
    bgr = np.ascontiguousarray(astronaut[..., ::-1])
    out = load_image(bgr, bgr=True)
    np.testing.assert_array_equal(out, astronaut)
    # One pixel by hand: a pure-blue BGR pixel (255, 0, 0) is RGB (0, 0, 255).
    frame = np.zeros((4, 5, 3), np.uint8)
    frame[1, 2] = (255, 0, 0)
    assert load_image(frame, bgr=True)[1, 2].tolist() == [0, 0, 255]
    assert load_image(frame)[1, 2].tolist() == [255, 0, 0]


def test_non_contiguous_array_view(astronaut):
    view = astronaut[::2, ::3]
    out = load_image(view)
    assert_rgb8(out, view.shape[:2])
    np.testing.assert_array_equal(out, view)


def test_gray_arrays():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = load_image(gray)
    assert_rgb8(out, (3, 4))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)
    np.testing.assert_array_equal(load_image(gray[..., None]), out)  # (H, W, 1) too


def test_uint16_array_is_rescaled():
    arr = np.array([[0, 257, 32768, 65535]], np.uint16)
    out = load_image(arr)
    assert_rgb8(out, (1, 4))
    assert out[0, :, 0].tolist() == [0, 1, 127, 255]


def test_float_arrays_unit_range_and_byte_range():
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert load_image(unit)[0, :, 1].tolist() == [0, 128, 255]
    byte_range = np.array([[0.0, 100.0, 255.0, 400.0]], np.float64)  # max > 1: already 0-255, clipped
    assert load_image(byte_range)[0, :, 0].tolist() == [0, 100, 255, 255]
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[0, 0] = (1.0, 0.0, 0.25)
    assert load_image(rgb)[0, 0].tolist() == [255, 0, 64]
    with_nan = np.array([[np.nan, 1.0]], np.float32)
    assert load_image(with_nan)[0, :, 0].tolist() == [0, 255]


def test_bool_array():
    mask = np.array([[True, False]])
    assert load_image(mask)[0, :, 0].tolist() == [255, 0]


def test_rgba_array_composited_on_white():
    arr = np.zeros((1, 3, 4), np.uint8)
    arr[0, 0] = (255, 0, 0, 255)  # opaque red
    arr[0, 1] = (0, 0, 0, 0)  # fully transparent → white
    arr[0, 2] = (0, 0, 0, 128)  # half-transparent black → mid gray
    out = load_image(arr)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 2 for v in out[0, 2].tolist())


# ---------------------------------------------------------------------------------- Pillow modes, encoded in memory
def test_rgba_png_alpha_composited_on_white():
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (255, 0, 0, 255))
    img.putpixel((1, 0), (0, 255, 0, 0))
    img.putpixel((2, 0), (0, 0, 0, 128))
    out = load_image(encode(img, "PNG"))
    assert_rgb8(out, (1, 3))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 2 for v in out[0, 2].tolist())


def test_la_png():
    img = Image.new("LA", (2, 1))
    img.putpixel((0, 0), (0, 0))  # transparent black → white
    img.putpixel((1, 0), (40, 255))  # opaque dark gray
    out = load_image(encode(img, "PNG"))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [40, 40, 40]


def test_palette_png_with_transparency():
    img = Image.new("P", (2, 2), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.putpixel((1, 1), 1)
    data = encode(img, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = load_image(data)
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent palette entry (black) → white, not black
    assert out[1, 1].tolist() == [255, 0, 0]


def test_palette_png_without_transparency():
    img = Image.new("P", (2, 1), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    assert load_image(encode(img, "PNG"))[0, 0].tolist() == [10, 200, 30]


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_red_is_red(fmt):
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    data = encode(img, fmt)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    r, g, b = load_image(data)[8, 8].tolist()
    assert r > 230 and g < 30 and b < 30, (r, g, b)


def test_16bit_png():
    arr = np.array([[0, 1000, 32768, 65535]], np.uint16)
    data = encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = load_image(data)
    assert_rgb8(out, (1, 4))
    assert out[0, :, 0].tolist() == [0, 4, 128, 255]
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_l_png():
    arr = np.array([[0, 90, 255]], np.uint8)
    out = load_image(encode(Image.fromarray(arr, "L"), "PNG"))
    assert out[0].tolist() == [[0, 0, 0], [90, 90, 90], [255, 255, 255]]


def test_one_bit_png():
    img = Image.new("1", (3, 2), 0)
    img.putpixel((2, 1), 1)
    out = load_image(encode(img, "PNG"))
    assert out[1, 2].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


# -------------------------------------------------------------------------------------------- EXIF orientation
def _marked_image() -> np.ndarray:
    """60 wide x 40 high, gray, with a red 12 px block in the stored top-left corner."""
    img = np.full((40, 60, 3), 128, np.uint8)
    img[:12, :12] = (255, 0, 0)
    return img


def _jpeg_with_orientation(arr: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())


def _is_red(pixel) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r > 200 and g < 60 and b < 60


def test_exif_orientation_6_rotates_clockwise():
    # Orientation 6: a viewer rotates the stored image 90° clockwise; the stored top-left lands top-right.
    out = load_image(_jpeg_with_orientation(_marked_image(), 6))
    assert out.shape == (60, 40, 3)
    assert _is_red(out[5, 40 - 6]), "marker should be at the top-right"
    assert not _is_red(out[5, 5]) and not _is_red(out[60 - 6, 5])


def test_exif_orientation_8_rotates_counter_clockwise():
    # Orientation 8: rotated 90° counter-clockwise; the stored top-left lands bottom-left.
    out = load_image(_jpeg_with_orientation(_marked_image(), 8))
    assert out.shape == (60, 40, 3)
    assert _is_red(out[60 - 6, 5]), "marker should be at the bottom-left"
    assert not _is_red(out[5, 5]) and not _is_red(out[5, 40 - 6])


def test_exif_orientation_applies_to_paths_and_pil_images(tmp_path):
    data = _jpeg_with_orientation(_marked_image(), 6)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    assert load_image(path).shape == (60, 40, 3)
    assert load_image(Image.open(io.BytesIO(data))).shape == (60, 40, 3)


def test_exif_orientation_1_is_left_alone():
    out = load_image(_jpeg_with_orientation(_marked_image(), 1))
    assert out.shape == (40, 60, 3)
    assert _is_red(out[5, 5])


# ---------------------------------------------------------------------------------------------- refused inputs
def _refused(source, *words: str, **kwargs) -> InvalidImageError:
    with pytest.raises(InvalidImageError) as info:
        load_image(source, **kwargs)
    exc = info.value
    assert isinstance(exc, AgeGenderError) and isinstance(exc, ValueError)
    # Never a raw decoder exception leaking through (not PIL's, not a bare OSError).
    assert not isinstance(exc, (UnidentifiedImageError, OSError))
    message = str(exc).lower()
    assert message and any(w in message for w in words), f"unhelpful message: {exc}"
    return exc


def test_empty_bytes_refused():
    _refused(b"", "empty", "0 bytes")


def test_text_file_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 20)
    exc = _refused(path, "not an image")
    assert "notes.jpg" in str(exc), "the message should name the file"


def test_truncated_jpeg_refused(astronaut):
    data = encode(astronaut, "JPEG", quality=90)
    _refused(data[: len(data) // 2], "truncated", "corrupt")


def test_random_bytes_refused():
    rng = np.random.default_rng(0)
    _refused(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not an image")


def test_png_signature_with_garbage_refused():
    _refused(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "not an image", "corrupt", "truncated")


def test_missing_path_refused(tmp_path):
    exc = _refused(tmp_path / "nope.png", "no such file")
    assert "nope.png" in str(exc)
    _refused(str(tmp_path / "nope.png"), "no such file")


def test_directory_path_refused(tmp_path):
    _refused(tmp_path, "no such file")


@pytest.mark.parametrize("shape", [(10, 10, 2), (10, 10, 5), (10,), (2, 10, 10, 3)])
def test_bad_array_shapes_refused(shape):
    _refused(np.zeros(shape, np.uint8), "shape", "not an image")


def test_bad_array_dtypes_refused():
    _refused(np.zeros((4, 4, 3), dtype=object), "dtype", "not an image")
    _refused(np.zeros((4, 4), dtype=np.complex64), "dtype", "not an image")


def test_zero_size_array_refused():
    _refused(np.zeros((0, 10, 3), np.uint8), "no pixels")


@pytest.mark.parametrize("obj", [object(), 42, None, [[1, 2], [3, 4]]], ids=["object", "int", "None", "list"])
def test_other_objects_refused(obj):
    _refused(obj, "cannot read")


# ------------------------------------------------------------------------------------------- size limit (bombs)
def test_huge_png_refused_before_decoding():
    data = encode(Image.new("1", (8000, 7000)), "PNG")  # 56 MP but ~7 kB encoded
    assert len(data) < 100_000
    with pytest.raises(ImageTooLargeError) as info:
        load_image(data)
    assert isinstance(info.value, InvalidImageError)
    assert "8000x7000" in str(info.value) and "megapixel" in str(info.value)


def test_huge_palette_png_via_file_object_refused():
    img = Image.new("P", (7500, 7000), 0)
    img.putpalette([0, 0, 0] * 256)
    with pytest.raises(ImageTooLargeError):
        load_image(io.BytesIO(encode(img, "PNG")))


def test_huge_array_refused_without_allocating():
    # A zero-strided view: its shape says 7100 x 7100 x 3 (50.4 MP) but it holds 3 bytes.
    view = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (7100, 7100, 3))
    assert view.shape[0] * view.shape[1] > MAX_PIXELS
    with pytest.raises(ImageTooLargeError):
        load_image(view)


def test_huge_pil_image_refused():
    with pytest.raises(ImageTooLargeError):
        load_image(Image.new("1", (8000, 7000)))


def test_max_pixels_argument_is_the_boundary(astronaut):
    small = np.zeros((10, 10, 3), np.uint8)
    assert load_image(small, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(ImageTooLargeError):
        load_image(small, max_pixels=99)
    with pytest.raises(ImageTooLargeError):
        load_image(encode(astronaut, "PNG"), max_pixels=512 * 512 - 1)
    assert load_image(encode(astronaut, "PNG"), max_pixels=512 * 512).shape == (512, 512, 3)


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header is rewritten to claim ``width`` x ``height`` (a decompression bomb's header)."""
    data = bytearray(encode(Image.new("L", (8, 8)), "PNG"))
    ihdr = 8  # after the signature: length (4), b"IHDR" (4), width (4), height (4), ...
    assert data[ihdr + 4:ihdr + 8] == b"IHDR"
    data[ihdr + 8:ihdr + 16] = struct.pack(">II", width, height)
    length = struct.unpack(">I", data[ihdr:ihdr + 4])[0]
    crc = zlib.crc32(bytes(data[ihdr + 4:ihdr + 8 + length])) & 0xFFFFFFFF
    data[ihdr + 8 + length:ihdr + 12 + length] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("size", [(8000, 7000), (20000, 20000)], ids=["over_ours", "over_pillows_own_guard"])
def test_bomb_header_refused_without_decoding(size):
    # 20000 x 20000 = 400 MP also trips Pillow's DecompressionBombError at open(): it must come out as ours.
    with pytest.raises(ImageTooLargeError) as info:
        load_image(_png_claiming_size(*size))
    assert "megapixel" in str(info.value) or "too large" in str(info.value)
