"""crop_face / crop_transform: calibrated, aligned crops of detected faces."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image

from agegender.crops.align import (ALIGN_POINTS, _similarity, chip_detection, crop_face, crop_faces, crop_transform,
                                   load_calibration)
from agegender.detection.detector import Detection
from agegender.io.images import load_image

from conftest import encode, utkface_chips


def apply(matrix: np.ndarray, points) -> np.ndarray:
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def crop_square(matrix: np.ndarray, size: int) -> np.ndarray:
    """Corners of the ``size`` crop mapped back into the source image (4, 2)."""
    inv = cv2.invertAffineTransform(matrix)
    return apply(inv, [[0, 0], [size, 0], [size, size], [0, size]])


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    area, inter = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    union = cv2.contourArea(a.astype(np.float32)) + cv2.contourArea(b.astype(np.float32)) - area
    return float(area / union) if union > 0 else 0.0


@pytest.mark.parametrize("size", [64, 128, 224])
def test_crop_shape_and_dtype(size, astronaut, astronaut_reference):
    crop = crop_face(astronaut, astronaut_reference["auto"], size=size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8


@pytest.mark.parametrize("mode", ["short", "full"])
def test_keypoints_land_on_the_template(mode, astronaut, astronaut_reference):
    det = astronaut_reference[mode]
    size = 128
    template = np.asarray(load_calibration()["template"][det.source])[:ALIGN_POINTS] * size
    landed = apply(crop_transform(det, size), det.keypoints[:ALIGN_POINTS])
    err = np.linalg.norm(landed - template, axis=1)
    assert err.max() < 5.0 and err.mean() < 3.5, f"keypoints off the template by {err.round(2)} px"
    # And the crop shows the face: skin-toned centre, not background.
    crop = crop_face(astronaut, det, size).astype(float)
    r, g, b = crop[48:80, 48:80].reshape(-1, 3).mean(0)
    assert r > g > b, (r, g, b)


@pytest.mark.parametrize("angle", [20, -20])
def test_rotated_face_is_levelled(angle, astronaut, detectors, astronaut_reference):
    ref = astronaut_reference["full"]
    centre = tuple(float(v) for v in ref.keypoints[:4].mean(0))
    rot = cv2.warpAffine(np.ascontiguousarray(astronaut), cv2.getRotationMatrix2D(centre, angle, 1.0), (512, 512),
                         borderMode=cv2.BORDER_REPLICATE)
    dets = detectors("auto").detect(rot)
    assert len(dets) == 1
    det = dets[0]
    (rx, ry), (lx, ly) = det.keypoints[:2]

    def eye_angle(k):
        return math.degrees(math.atan2(k[1, 1] - k[0, 1], k[1, 0] - k[0, 0]))

    # The input really is tilted (cv2 rotates counter-clockwise for positive angles: the eye line turns by -angle).
    assert abs(eye_angle(det.keypoints) - (eye_angle(ref.keypoints) - angle)) < 8
    size = 128
    eyes = apply(crop_transform(det, size), det.keypoints[:2])
    dy = eyes[1, 1] - eyes[0, 1]
    assert abs(dy) < 3.0, f"eye line not level in the crop: dy = {dy:.2f} px"
    assert eyes[0, 0] < eyes[1, 0]
    # The levelled crop frames the same square of the face as the crop of the upright image does.
    unrotate = cv2.invertAffineTransform(cv2.getRotationMatrix2D(centre, angle, 1.0))
    square_rot = apply(unrotate, crop_square(crop_transform(det, size), size))
    square_up = crop_square(crop_transform(ref, size), size)
    iou = polygon_iou(square_rot, square_up)
    assert iou > 0.8, f"crop of the rotated face covers a different region (IoU {iou:.2f})"


@pytest.mark.parametrize("mode", ["short", "full"])
def test_face_at_border_gives_full_crop_with_replicated_padding(mode, astronaut, detectors, astronaut_reference):
    ref = astronaut_reference[mode]
    cut = int(round(ref.box[0] + 0.25 * ref.width))
    img = np.ascontiguousarray(astronaut[:, cut:])
    dets = detectors(mode).detect(img)
    assert len(dets) == 1
    det = dets[0]
    size = 128
    crop = crop_face(img, det, size)
    assert crop.shape == (size, size, 3)
    # No black band: every column and row of the crop has content.
    assert crop.reshape(size, size, 3).mean(axis=(0, 2)).min() > 20
    assert crop.mean(axis=(1, 2)).min() > 20
    # Pixels of the crop that come from left of the image repeat the image's first column.
    inv = cv2.invertAffineTransform(crop_transform(det, size))
    ys, xs = np.mgrid[0:size, 0:size]
    src = apply(inv, np.stack([xs.ravel(), ys.ravel()], 1))
    outside = src[:, 0] < -2
    assert outside.sum() > size * 5, "the test face must extend past the border"
    rows = np.clip(np.round(src[outside, 1]).astype(int), 0, img.shape[0] - 1)
    expected = img[rows, 0].astype(float)
    got = crop.reshape(-1, 3)[outside].astype(float)
    assert np.abs(got - expected).mean() < 12
    # The crop still frames the same square of the face as the crop of the uncut image does.
    square_cut = crop_square(crop_transform(det, size), size) + [cut, 0]
    square_full = crop_square(crop_transform(ref, size), size)
    iou = polygon_iou(square_cut, square_full)
    assert iou > 0.8, f"crop of the cut face covers a different region (IoU {iou:.2f})"


def test_exif_rotated_jpeg_gives_same_detection_and_crop(astronaut, detectors):
    upright = np.ascontiguousarray(astronaut[:, :420])  # not square, so a missed rotation changes the shape
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # rotated 90° counter-clockwise on disk ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and tagged "rotate 90° clockwise to display"
    rotated_jpeg = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    upright_jpeg = encode(upright, "JPEG", quality=95)
    a = load_image(upright_jpeg)
    b = load_image(rotated_jpeg)
    assert a.shape == b.shape == (512, 420, 3)
    det = detectors("auto")
    da, db = det.detect(a), det.detect(b)
    assert len(da) == len(db) == 1
    assert np.abs(np.array(da[0].box) - np.array(db[0].box)).max() <= 4, (da[0].box, db[0].box)
    ca, cb = crop_face(a, da[0], 128).astype(float), crop_face(b, db[0], 128).astype(float)
    assert np.abs(ca - cb).mean() < 8


def test_context_widens_around_the_same_centre(astronaut, astronaut_reference):
    det = astronaut_reference["auto"]
    plain = crop_face(astronaut, det, 128).astype(float)
    # Same scale: the centre 128 px of a 192 px crop with context 1.5 is the plain crop.
    wide = crop_face(astronaut, det, 192, context=1.5).astype(float)
    assert np.abs(wide[32:160, 32:160] - plain).mean() < 1.0
    # Same output size: the centre half of a context-2 crop, upsampled, resembles the plain crop ...
    ctx2 = crop_face(astronaut, det, 128, context=2.0)
    centre = cv2.resize(ctx2[32:96, 32:96], (128, 128), interpolation=cv2.INTER_LINEAR).astype(float)
    diff_centre = np.abs(centre - plain).mean()
    assert diff_centre < 12
    # ... much more than an off-centre quarter does (the frame grows around the same centre).
    corner = cv2.resize(ctx2[:64, :64], (128, 128), interpolation=cv2.INTER_LINEAR).astype(float)
    assert np.abs(corner - plain).mean() > 2 * diff_centre
    # The keypoints move towards the centre by exactly 1/context.
    m1, m2 = crop_transform(det, 128), crop_transform(det, 128, context=2.0)
    k1, k2 = apply(m1, det.keypoints[:4]), apply(m2, det.keypoints[:4])
    np.testing.assert_allclose(k2 - 64, (k1 - 64) / 2, atol=1e-6)


def test_box_fallback_when_keypoints_are_unusable(astronaut, astronaut_reference):
    det = astronaut_reference["full"]
    broken = Detection(det.box, det.score, np.full((6, 2), np.nan, np.float32), det.source)
    crop = crop_face(astronaut, broken, 128)
    assert crop.shape == (128, 128, 3)
    # The box-based frame lands close to the keypoint-based one.
    a = crop_square(crop_transform(det, 128), 128)
    b = crop_square(crop_transform(broken, 128), 128)
    assert polygon_iou(a, b) > 0.7


def test_large_face_is_downsampled_without_aliasing(astronaut, astronaut_reference):
    """A face 4x the output size is warped at an intermediate size then area-averaged: the crop must match a
    crop of the same face from a pre-shrunk image, not an aliased one."""
    det = astronaut_reference["full"]
    big = cv2.resize(np.ascontiguousarray(astronaut), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    big_det = Detection(tuple(v * 4 for v in det.box), det.score, det.keypoints * 4, det.source)
    small = crop_face(astronaut, det, 64).astype(float)
    from_big = crop_face(big, big_det, 64).astype(float)
    assert np.abs(small - from_big).mean() < 6


@pytest.mark.data
def test_chip_detection_reproduces_detector_framing(detectors):
    """``chip_detection(200)`` frames a UTKFace chip like the detector path does on the chip pasted in a photo."""
    pad = 100
    ious, diffs = [], []
    for path in utkface_chips(12):
        chip = load_image(path)
        if chip.shape[:2] != (200, 200):
            continue
        canvas = cv2.copyMakeBorder(chip, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        dets = detectors("full").detect(canvas)
        if not dets:
            continue
        d = min(dets, key=lambda d: abs((d.box[0] + d.box[2]) / 2 - 200) + abs((d.box[1] + d.box[3]) / 2 - 200))
        found = Detection(tuple(v - pad for v in d.box), d.score, d.keypoints - pad, d.source)
        synthetic = chip_detection(200, source=d.source)
        m_found, m_chip = crop_transform(found, 128), crop_transform(synthetic, 128)
        ious.append(polygon_iou(crop_square(m_found, 128), crop_square(m_chip, 128)))
        diffs.append(np.abs(crop_face(canvas, d, 128).astype(float) - crop_face(chip, synthetic, 128).astype(float)).mean())
    assert len(ious) >= 10, f"the detector found only {len(ious)} of 12 pasted chips"
    print(f"\nchip_detection vs detector crops on {len(ious)} UTKFace chips: IoU median {np.median(ious):.3f} "
          f"min {min(ious):.3f}; mean abs diff median {np.median(diffs):.1f}")
    assert np.median(ious) > 0.8 and min(ious) > 0.6, np.round(ious, 3)
    assert np.median(diffs) < 25


def test_chip_detection_geometry():
    calib = load_calibration()
    for source in ("short", "full"):
        det = chip_detection(200, source)
        assert det.source == source and det.keypoints.shape == (6, 2)
        np.testing.assert_allclose(det.keypoints[:4], np.asarray(calib["template"][source])[:4] * 200, atol=1e-3)
        # Its crop maps the chip's keypoints exactly onto the template (it *is* the calibrated framing).
        landed = apply(crop_transform(det, 128), det.keypoints[:4])
        np.testing.assert_allclose(landed, np.asarray(calib["template"][source])[:4] * 128, atol=1e-3)


def test_similarity_is_the_least_squares_fit():
    """The closed-form fit equals a least-squares solve of x' = a·x − b·y + tx, y' = b·x + a·y + ty over the points."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        src = rng.uniform(0, 500, (4, 2))
        dst = rng.uniform(0, 160, (4, 2))
        rows = np.concatenate([np.c_[src[:, 0], -src[:, 1], np.ones(4), np.zeros(4)],
                               np.c_[src[:, 1], src[:, 0], np.zeros(4), np.ones(4)]])
        expected = np.linalg.lstsq(rows, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
        got = _similarity([tuple(p) for p in src], [tuple(p) for p in dst])
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("size", [64, 160])
def test_crop_faces_batches_what_crop_face_crops(size, astronaut, astronaut_reference):
    """One batch, the same pixels as one crop_face call each (at 64 px the face is over twice the crop's size and
    takes the intermediate warp)."""
    det = astronaut_reference["auto"]
    contexts = (0.9, 1.0, 1.1)
    batch = crop_faces([(astronaut, det), (astronaut[::-1].copy(), det)], size, contexts)
    assert batch.shape == (2, 3, size, size, 3) and batch.dtype == np.uint8
    for j, context in enumerate(contexts):
        np.testing.assert_array_equal(batch[0, j], crop_face(astronaut, det, size, context))
        np.testing.assert_array_equal(batch[1, j], crop_face(astronaut[::-1].copy(), det, size, context))
    assert not np.array_equal(batch[0, 1], batch[1, 1])
