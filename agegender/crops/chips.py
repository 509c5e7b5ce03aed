"""How a face chip (an image that already shows one face, like a UTKFace chip) is framed for the model.

The model is trained on crops the *detector* framed: ``train/preprocess.py`` runs every UTKFace chip through
:func:`frame_chip`. A chip at inference must be framed the same way, or the model sees faces placed and scaled
unlike anything it learned from. So a chip gets a replicated border (the detector needs the whole head, and tight
chips cut through chin and hair), its main face is detected, and the calibrated crop is taken around that face.

The fixed chip template (:func:`agegender.crops.align.chip_detection`, the *average* detector framing of a chip) is the
fallback where no face is found, and a ``framing="template"`` option for comparison. Per chip the detector
framing differs from the average, and the model learned the detector's: on the UTKFace val split the template
framing cost the bundled EfficientNet-Lite0 0.12 years of MAE (4.58 vs 4.46) and 1.9 points of ±5 accuracy.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, Protocol, Sequence, TypeVar

import cv2
import numpy as np

from agegender.crops.align import chip_detection
from agegender.detection.detector import Detection, FaceDetector

CHIP_SIZE = 200  # chips are resized to this before the template framing (UTKFace chips are 200 x 200)
CHIP_PAD = 0.5  # replicated border around a chip, as a share of its longer side (100 px on a UTKFace chip)
ChipFraming = Literal["detect", "template"]
CHIP_FRAMINGS: tuple[str, ...] = ("detect", "template")


class _Boxed(Protocol):
    box: tuple[float, float, float, float]


B = TypeVar("B", bound=_Boxed)


def main_face(faces: Sequence[B], shape: tuple[int, ...]) -> B | None:
    """The face an image's label is about: the largest, discounted by its distance from the centre.

    One rule for the training crops, chip framing and the evaluation of photos, so all pick the same face."""
    if not faces:
        return None
    h, w = shape[:2]

    def key(face: B) -> float:
        x1, y1, x2, y2 = face.box
        off = math.hypot(((x1 + x2) / 2 - w / 2) / w, ((y1 + y2) / 2 - h / 2) / h)
        return (x2 - x1) * (y2 - y1) * (1.0 - off)

    return max(faces, key=key)


def detect_main_face(rgb: np.ndarray, detector: FaceDetector, pad: int) -> Detection | None:
    """The main face of ``rgb`` found on a copy with a ``pad`` px replicated border, in ``rgb``'s coordinates
    (crops past the edge replicate it too, so cropping ``rgb`` equals cropping the padded copy)."""
    canvas = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    det = main_face(detector.detect(canvas), canvas.shape)
    if det is None:
        return None
    x1, y1, x2, y2 = det.box
    return Detection((x1 - pad, y1 - pad, x2 - pad, y2 - pad), det.score,
                     det.keypoints - np.float32(pad), det.source)


class FramedChip(NamedTuple):
    """A chip ready to crop: ``crop_face(image, detection)``; ``reported`` is the same face in the input chip's
    coordinates (``image`` is the 200 px resize of a chip of another size under the template framing)."""

    image: np.ndarray
    detection: Detection
    reported: Detection


def frame_chip(rgb: np.ndarray, detector: FaceDetector | None, framing: ChipFraming = "detect") -> FramedChip:
    """Frame one face chip as the training crops were framed.

    With ``framing="detect"`` the score is the detector's; a chip where no face was found falls back to the
    template framing with score 0 (so callers can count the fallbacks). ``framing="template"`` scores 1."""
    if framing not in CHIP_FRAMINGS:
        raise ValueError(f"framing must be one of {CHIP_FRAMINGS}, not {framing!r}")
    if framing == "detect":
        if detector is None:
            raise ValueError("framing='detect' needs a detector")
        det = detect_main_face(rgb, detector, int(round(max(rgb.shape[:2]) * CHIP_PAD)))
        if det is not None:
            return FramedChip(rgb, det, det)
    chip = rgb if rgb.shape[:2] == (CHIP_SIZE, CHIP_SIZE) else \
        cv2.resize(rgb, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_AREA)
    template = chip_detection(CHIP_SIZE)
    det = Detection(template.box, 1.0 if framing == "template" else 0.0, template.keypoints, template.source)
    sx, sy = rgb.shape[1] / CHIP_SIZE, rgb.shape[0] / CHIP_SIZE
    x1, y1, x2, y2 = det.box
    reported = Detection((x1 * sx, y1 * sy, x2 * sx, y2 * sy), det.score,
                         (det.keypoints * np.float32([sx, sy])).astype(np.float32), det.source)
    return FramedChip(chip, det, reported)
