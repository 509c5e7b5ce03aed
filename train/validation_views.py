"""The validation faces as the app's default views see them, shared by the int8 check (``train.quantize``) and
the gender-head refit (``train.gender_head``): each labelled face framed as the app frames it, then cropped at the
three scale-TTA framings (the engine adds the mirrors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agegender.crops.align import crop_face
from agegender.crops.chips import frame_chip, main_face
from agegender.detection.detector import FaceDetector
from agegender.estimator import SCALE_TTA_CONTEXTS
from agegender.evaluation.datasets import read_split
from agegender.io.images import load_image


def labelled_face(rgb: np.ndarray, detector: FaceDetector, chip: bool):
    """(image, detection) of the labelled face as the app frames it (a chip framed as in training; a photo: its
    main face), or None for a photo without a face."""
    if chip:
        framed = frame_chip(rgb, detector)
        return framed.image, framed.detection
    det = main_face(detector.detect(rgb), rgb.shape)
    return None if det is None else (rgb, det)


def face_views(path: Path, detector: FaceDetector, size: int, chip: bool) -> np.ndarray | None:
    """(3, S, S, 3) crops of the labelled face (chips framed as in training; photos: their main face)."""
    found = labelled_face(load_image(path), detector, chip)
    if found is None:
        return None
    image, det = found
    return np.stack([crop_face(image, det, size=size, context=c) for c in SCALE_TTA_CONTEXTS])


def split_views(split: str, size: int, detector: FaceDetector, limit: int | None = None):
    """Views, ages and genders of every sample of ``dataset:split`` (photos without a face are skipped)."""
    dataset, part = split.split(":")
    samples = read_split(dataset, part)
    if limit:
        samples = samples[:: max(1, len(samples) // limit)][:limit]
    views, ages, genders = [], [], []
    for s in samples:
        v = face_views(s.path(), detector, size, chip=dataset == "utkface")
        if v is not None:
            views.append(v)
            ages.append(s.age)
            genders.append(s.gender)
    return np.stack(views), np.array(ages, np.float64), np.array(genders)


def cpu_name() -> str:
    """The CPU model a speed figure came from (``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    import platform

    info = Path("/proc/cpuinfo")
    lines = info.read_text(errors="replace").splitlines() if info.exists() else []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else (platform.processor() or platform.machine())
