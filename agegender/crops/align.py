"""Face crops framed like the training chips: the single crop function for inference *and* training.

UTKFace chips are aligned (eye line horizontal) and tightly framed. A face cut from a photo must be framed the
same way or the model sees something it was never trained on. We align with a similarity transform that maps
four BlazeFace keypoints (eyes, nose tip, mouth) onto a *template*: where those keypoints fall, on average, in a
UTKFace chip. The template (and a box-based fallback for faces whose keypoints are unreliable) is fitted by
``train/calibrate_crop.py`` on chips pasted into a larger canvas and stored in ``crop_calibration.json``.

``context`` > 1 widens the frame around the same centre (used to cache training crops with room for
random-resized-crop augmentation; the centre ``1/context`` of such a crop is exactly the inference crop).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from agegender.detection.detector import Detection

CALIBRATION_FILE = Path(__file__).resolve().parent / "crop_calibration.json"
ALIGN_POINTS = 4  # right eye, left eye, nose tip, mouth centre; ears are too unstable under yaw


@lru_cache(maxsize=1)
def load_calibration(path: str = str(CALIBRATION_FILE)) -> dict:
    """The fitted crop calibration (templates and box mapping per BlazeFace model)."""
    return json.loads(Path(path).read_text())


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src → dst, as a 2×3 matrix.

    Closed-form Umeyama fit. OpenCV's ``estimateAffinePartial2D`` is a *robust* estimator (RANSAC/LMEDS on
    2-point subsets), which with only four keypoints would throw away half of them; we want all four.
    """
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s0, d0 = src - src_mean, dst - dst_mean
    u, sigma, vt = np.linalg.svd(d0.T @ s0 / len(src))
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = (sigma * np.diag(sign)).sum() / max((s0 ** 2).sum() / len(src), 1e-12)
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def _box_frame(det: Detection, calib: dict) -> tuple[np.ndarray, float, float]:
    """Chip centre, side and angle predicted from the detection box (fallback when keypoints disagree)."""
    params = calib["box"][det.source]
    x1, y1, x2, y2 = det.box
    side = math.sqrt(max(x2 - x1, 1.0) * max(y2 - y1, 1.0))
    angle = _eye_angle(det.keypoints)
    c, s = math.cos(angle), math.sin(angle)
    offset = np.array([params["dx"] * side, params["dy"] * side])
    rot = np.array([[c, -s], [s, c]])
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + rot @ offset
    return centre, params["scale"] * side, angle


def _eye_angle(kps: np.ndarray) -> float:
    (rx, ry), (lx, ly) = kps[0], kps[1]
    if not np.all(np.isfinite(kps[:2])) or (lx - rx) ** 2 + (ly - ry) ** 2 < 1e-6:
        return 0.0
    angle = math.atan2(ly - ry, lx - rx)
    # Eyes swapped (face upside down, or garbage keypoints): do not flip the crop on its head.
    return angle if abs(angle) < math.radians(75) else 0.0


def crop_transform(det: Detection, size: int, context: float = 1.0) -> np.ndarray:
    """2×3 affine matrix from image pixels to the ``size``×``size`` crop of ``det``."""
    calib = load_calibration()
    template = np.asarray(calib["template"][det.source], dtype=np.float64)[:ALIGN_POINTS]
    dst = ((template - 0.5) / context + 0.5) * size
    src = np.asarray(det.keypoints[:ALIGN_POINTS], dtype=np.float64)
    box_centre, box_side, box_angle = _box_frame(det, calib)
    matrix = None
    if np.all(np.isfinite(src)):
        matrix = _similarity(src, dst)
        scale = math.hypot(matrix[0, 0], matrix[1, 0])
        side_from_keypoints = size / context / max(scale, 1e-9)
        rotation = math.atan2(matrix[1, 0], matrix[0, 0])
        # Keypoints of tiny or strongly turned faces can collapse; trust the box then.
        ratio = side_from_keypoints / box_side
        if not (0.65 < ratio < 1.5) or abs(rotation) > math.radians(75):
            matrix = None
    if matrix is None:
        side = box_side * context
        scale = size / side
        c, s = math.cos(-box_angle), math.sin(-box_angle)
        lin = scale * np.array([[c, -s], [s, c]])
        matrix = np.zeros((2, 3))
        matrix[:, :2] = lin
        matrix[:, 2] = np.array([size / 2, size / 2]) - lin @ box_centre
    return matrix


def crop_face(image: np.ndarray, det: Detection, size: int = 128, context: float = 1.0) -> np.ndarray:
    """Aligned, calibrated ``size``×``size`` RGB crop of one detected face; pads past the border by replication.

    Large faces are first warped at their native resolution and then shrunk with area averaging, so a 600 px
    face does not alias into a jagged 128 px crop.
    """
    matrix = crop_transform(det, size, context)
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    work = size
    if scale < 0.5:  # the face is more than twice the output size: warp to an intermediate size first
        work = int(min(size / scale, size * 4))
        matrix = matrix * (work / size)
    crop = cv2.warpAffine(image, matrix, (work, work), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if work != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return crop


def chip_detection(size: int = 200, source: str = "full") -> Detection:
    """A synthetic detection that reproduces the calibrated framing of an already aligned chip of ``size``.

    ``predict_crops`` falls back to it for a chip whose face the detector misses (and uses it for every chip with
    ``framing="template"``): the average framing of a chip, as calibrated crops from photos are framed.
    """
    calib = load_calibration()
    kps = np.zeros((6, 2), dtype=np.float32)
    kps[:ALIGN_POINTS] = np.asarray(calib["template"][source], dtype=np.float32)[:ALIGN_POINTS] * size
    params = calib["box"][source]
    side = size / params["scale"]
    cx, cy = size / 2 - params["dx"] * side, size / 2 - params["dy"] * side
    return Detection(box=(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), score=1.0,
                     keypoints=kps, source=source)
