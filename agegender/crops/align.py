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
from typing import Sequence

import cv2
import numpy as np

from agegender.detection.detector import Detection

CALIBRATION_FILE = Path(__file__).resolve().parent / "crop_calibration.json"
ALIGN_POINTS = 4  # right eye, left eye, nose tip, mouth centre; ears are too unstable under yaw


@lru_cache(maxsize=1)
def load_calibration(path: str = str(CALIBRATION_FILE)) -> dict:
    """The fitted crop calibration (templates and box mapping per BlazeFace model)."""
    return json.loads(Path(path).read_text())


@lru_cache(maxsize=None)
def _template(source: str) -> tuple[tuple[float, float], ...]:
    """The calibrated keypoint template of one BlazeFace model, as plain floats (read once)."""
    return tuple((float(x), float(y)) for x, y in load_calibration()["template"][source][:ALIGN_POINTS])


def _similarity(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src → dst: ``(a, b, tx, ty)`` of the
    matrix ``[[a, -b, tx], [b, a, ty]]``.

    Umeyama's fit in closed form: in 2-D the best rotation has cos/sin ∝ (Σ s·d, Σ s×d) of the centred points, which
    is what the SVD of their covariance gives (without reflections), at a quarter of the cost (crops are on the serial
    path of every photo: 66 per ``bald_guys.jpg``). OpenCV's ``estimateAffinePartial2D`` is a *robust* estimator
    (RANSAC/LMEDS on 2-point subsets), which with only four keypoints would throw away half of them; we want all four.
    """
    n = len(src)
    sx, sy = sum(p[0] for p in src) / n, sum(p[1] for p in src) / n
    dx, dy = sum(p[0] for p in dst) / n, sum(p[1] for p in dst) / n
    var = dot = cross = 0.0
    for (ax, ay), (bx, by) in zip(src, dst):
        ax, ay, bx, by = ax - sx, ay - sy, bx - dx, by - dy
        var += ax * ax + ay * ay
        dot += ax * bx + ay * by
        cross += ax * by - ay * bx
    var = max(var / n, 1e-12)
    a, b = dot / n / var, cross / n / var
    return a, b, dx - (a * sx - b * sy), dy - (b * sx + a * sy)


def _box_frame(det: Detection, calib: dict) -> tuple[tuple[float, float], float, float]:
    """Chip centre, side and angle predicted from the detection box (fallback when keypoints disagree)."""
    params = calib["box"][det.source]
    x1, y1, x2, y2 = det.box
    side = math.sqrt(max(x2 - x1, 1.0) * max(y2 - y1, 1.0))
    angle = _eye_angle(det.keypoints)
    c, s = math.cos(angle), math.sin(angle)
    ox, oy = params["dx"] * side, params["dy"] * side
    centre = ((x1 + x2) / 2 + c * ox - s * oy, (y1 + y2) / 2 + s * ox + c * oy)
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
    dst = [(((tx - 0.5) / context + 0.5) * size, ((ty - 0.5) / context + 0.5) * size)
           for tx, ty in _template(det.source)]
    src = [(float(x), float(y)) for x, y in det.keypoints[:ALIGN_POINTS]]
    box_centre, box_side, box_angle = _box_frame(det, calib)
    if all(math.isfinite(v) for point in src for v in point):
        a, b, tx, ty = _similarity(src, dst)
        side_from_keypoints = size / context / max(math.hypot(a, b), 1e-9)
        # Keypoints of tiny or strongly turned faces can collapse; trust the box then.
        if 0.65 < side_from_keypoints / box_side < 1.5 and abs(math.atan2(b, a)) <= math.radians(75):
            return np.array([[a, -b, tx], [b, a, ty]])
    scale = size / (box_side * context)
    c, s = math.cos(-box_angle), math.sin(-box_angle)
    (l00, l01), (l10, l11) = (scale * c, -scale * s), (scale * s, scale * c)
    cx, cy = box_centre
    return np.array([[l00, l01, size / 2 - (l00 * cx + l01 * cy)], [l10, l11, size / 2 - (l10 * cx + l11 * cy)]])


def crop_face(image: np.ndarray, det: Detection, size: int = 128, context: float = 1.0,
              out: np.ndarray | None = None) -> np.ndarray:
    """Aligned, calibrated ``size``×``size`` RGB crop of one detected face; pads past the border by replication.

    Large faces are first warped at their native resolution and then shrunk with area averaging, so a 600 px
    face does not alias into a jagged 128 px crop. ``out``: a C-contiguous (size, size, 3) uint8 array to write the
    crop into (e.g. one row of a batch, saving a copy per crop), returned.
    """
    matrix = crop_transform(det, size, context)
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    work = size
    if scale < 0.5:  # the face is more than twice the output size: warp to an intermediate size first
        work = int(min(size / scale, size * 4))
        matrix = matrix * (work / size)
    direct = out if work == size else None
    crop = cv2.warpAffine(image, matrix, (work, work), dst=direct, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    if work != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    if out is None:
        return crop
    if crop is not out:
        out[...] = crop
    return out


def crop_faces(sources: Sequence[tuple[np.ndarray, Detection]], size: int, contexts: Sequence[float] = (1.0,)
               ) -> np.ndarray:
    """(N, len(contexts), size, size, 3) uint8: each (image, detection) cropped at each framing ``context`` by
    :func:`crop_face`, warped straight into one batch (no copy per crop: the crops sit on the serial path between the
    network's rounds, 66 of them on ``bald_guys.jpg``)."""
    out = np.empty((len(sources), len(contexts), size, size, 3), np.uint8)
    for i, (image, det) in enumerate(sources):
        for j, context in enumerate(contexts):
            crop_face(image, det, size=size, context=context, out=out[i, j])
    return out


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
