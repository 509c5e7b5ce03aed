"""Face detections as data: the :class:`Detection` record, box overlaps, merging passes with NMS, and the check
that a low-score detection's keypoints are shaped like a face. Pure NumPy: no MediaPipe, no OpenCV."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
"""BlazeFace keypoint order; 'right' is the subject's right, i.e. the eye on the image's left."""


@dataclass(frozen=True)
class Detection:
    """One face found in an image, in that image's pixel coordinates (floats, x to the right, y down)."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray = field(repr=False)  # (6, 2) float32, order of KEYPOINT_NAMES
    source: str = "full"  # which BlazeFace model found it ("short"/"full"): their boxes are framed differently

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def _pairwise_overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersection areas (N, M), areas of a (N,), areas of b (M,)) for boxes in x1, y1, x2, y2."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return iw * ih, area_a, area_b


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes ``a`` (N, 4) and ``b`` (M, 4) in x1, y1, x2, y2."""
    inter, area_a, area_b = _pairwise_overlap(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _intersection_over_smaller(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter, area_a, area_b = _pairwise_overlap(a, b)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.where(smaller > 0, inter / np.maximum(smaller, 1e-9), 0.0)


def merge_detections(
    detections: list[Detection], iou_threshold: float = 0.3, containment_threshold: float = 0.7
) -> list[Detection]:
    """Greedy NMS across passes and tiles.

    Besides IoU we suppress a box mostly contained in a better one: the same face seen at two scales gives a
    small box inside a big one whose IoU can be low.
    """
    if not detections:
        return []
    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)
    boxes = np.array([detections[i].box for i in order], dtype=np.float64)
    iou = box_iou(boxes, boxes)
    contain = _intersection_over_smaller(boxes, boxes)
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for rank in range(len(order)):
        if suppressed[rank]:
            continue
        keep.append(order[rank])
        suppressed |= (iou[rank] > iou_threshold) | (contain[rank] > containment_threshold)
    return [detections[i] for i in keep]


def face_shaped(det: Detection) -> bool:
    """Whether the BlazeFace keypoints are arranged like a face: nose and mouth below the line of the eyes (in
    the eyes' own frame, so tilted heads pass), the mouth below the nose, and not a nose that sits both beside one
    eye of a frontal pair and nearly level with the eyes.

    Why: BlazeFace's low-score false positives fit its keypoints to whatever it saw. The hand with a ring on
    ``facenet_pytorch/multiface.jpg`` (score 0.53) has frontal eyes (0.45 box widths apart), its "nose" 0.38 eye
    distances off their middle and only 0.30 below them; real faces on the annotated photos have one anomaly or
    the other (a turned head: nose off-centre; a raised chin: nose high), never both.
    """
    k = np.asarray(det.keypoints, dtype=np.float64)
    if k.shape != (6, 2) or not np.all(np.isfinite(k)) or not k.any():
        return False
    eyes = k[1] - k[0]
    dist = float(np.hypot(*eyes))
    if dist < 1e-6 or det.width <= 0:
        return False
    u = eyes / dist
    v = np.array([-u[1], u[0]])  # points down the face
    if abs(np.degrees(np.arctan2(u[1], u[0]))) > 60:
        return False
    mid = (k[0] + k[1]) / 2
    nose_down, mouth_down = (k[2] - mid) @ v / dist, (k[3] - mid) @ v / dist
    nose_side = (k[2] - mid) @ u / dist
    if not (0.2 <= nose_down <= 1.8 and mouth_down - nose_down >= 0.15 and mouth_down <= 2.8):
        return False
    frontal_eyes = dist / det.width >= 0.4
    return not (frontal_eyes and abs(nose_side) > 0.32 and nose_down < 0.4)
