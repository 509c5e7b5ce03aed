"""``pasted`` mode: a face chip pasted into a photo-like canvas (:func:`paste_chip`), and which detected box
is the pasted face (:func:`match_box`). The gap between ``crops`` and ``pasted`` is what detection and
re-cropping cost in the app."""

from __future__ import annotations

import zlib
from typing import Sequence

import cv2
import numpy as np

from agegender.crops.chips import CHIP_SIZE
from agegender.crops.align import chip_detection
from agegender.detection.detector import box_iou
from agegender.io.images import load_image
from agegender.evaluation.samples import Labelled

PASTE_SCALE = 2.5  # canvas side / chip side
PASTE_BLUR = 0.03  # Gaussian sigma of the background, as a fraction of the canvas side
PASTE_FEATHER = 0.06  # width of the chip's blended edge, as a fraction of the chip side
MIN_INSIDE = 0.5  # share of a detection box that must lie on the pasted face for it to count as that face


def paste_chip(chip: np.ndarray, background: np.ndarray, rng: np.random.Generator,
               scale: float = PASTE_SCALE) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Place a face chip in a photo-like canvas; returns (canvas, where the chip's face is).

    The background is another image turned upside down, stretched to the canvas and strongly blurred: real
    photo colours and texture, but no upright face the detector could confuse with the chip. The chip (resized
    to 200 px) goes to a random position with a feathered edge, so no hard seam frames the face. The returned
    box is where BlazeFace's full-range model puts a face on a chip (the crop calibration), moved to the canvas.
    """
    chip = load_image(chip)
    if chip.shape[:2] != (CHIP_SIZE, CHIP_SIZE):
        chip = cv2.resize(chip, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_AREA)
    side = int(round(CHIP_SIZE * scale))
    canvas = cv2.resize(np.ascontiguousarray(load_image(background)[::-1, ::-1]), (side, side),
                        interpolation=cv2.INTER_LINEAR)
    canvas = cv2.GaussianBlur(canvas, (0, 0), sigmaX=side * PASTE_BLUR).astype(np.float32)
    x, y = (int(v) for v in rng.integers(0, side - CHIP_SIZE + 1, size=2))
    ramp = np.minimum(np.arange(CHIP_SIZE) + 0.5, CHIP_SIZE - np.arange(CHIP_SIZE) - 0.5) / (PASTE_FEATHER * CHIP_SIZE)
    ramp = np.clip(ramp, 0.0, 1.0)
    alpha = np.minimum.outer(ramp, ramp)[..., None]
    region = canvas[y:y + CHIP_SIZE, x:x + CHIP_SIZE]
    canvas[y:y + CHIP_SIZE, x:x + CHIP_SIZE] = alpha * chip + (1.0 - alpha) * region
    x1, y1, x2, y2 = chip_detection(CHIP_SIZE).box
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), (x1 + x, y1 + y, x2 + x, y2 + y)


def pasted_canvas(sample: Labelled, pool: Sequence[Labelled], seed: int = 0
                  ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The canvas of ``sample`` for ``pasted`` evaluation: background image from ``pool`` and position drawn
    from a random state that depends only on the seed and the file name, so a ``--limit`` subset, a rerun or
    the peer benchmark see exactly the same canvases."""
    rng = np.random.default_rng([seed, zlib.crc32(sample.file.encode())])
    background = pool[int(rng.integers(len(pool)))]
    return paste_chip(load_image(sample.path()), load_image(background.path()), rng)


def match_box(boxes: Sequence[Sequence[float]], target: Sequence[float]) -> tuple[int | None, float]:
    """Index of the box that is the pasted face (None if none is) and its IoU with ``target``.

    A box counts when at least :data:`MIN_INSIDE` of it lies within ``target``; among those the one with the
    highest IoU wins. Plain IoU would be unfair to detectors with tighter boxes than BlazeFace's (dlib's HOG),
    and the "inside" test rejects a box around the (blurred) background instead of the chip.
    """
    if len(boxes) == 0:
        return None, 0.0
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    t = np.asarray(target, dtype=np.float64)
    iw = np.clip(np.minimum(b[:, 2], t[2]) - np.maximum(b[:, 0], t[0]), 0, None)
    ih = np.clip(np.minimum(b[:, 3], t[3]) - np.maximum(b[:, 1], t[1]), 0, None)
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-9)
    iou = box_iou(b, t[None])[:, 0]
    score = np.where(iw * ih / area >= MIN_INSIDE, iou, -1.0)
    best = int(score.argmax())
    return (best if score[best] > 0 else None), float(iou[best] if score[best] > 0 else iou.max())


