"""Cache training crops made by the app's own pipeline: detect → calibrated crop.

Training must see exactly what the app feeds the model. Every image goes through ``FaceDetector("auto")`` and
:func:`agegender.crops.align.crop_face`; UTKFace chips are framed by :func:`agegender.crops.chips.frame_chip`, the very function
``Estimator.predict_crops`` uses (replicated border, detect, calibrated crop), and All-Age-Faces photos get a
replicated border so faces near their black rotated edges are still found. Crops are
stored at ``--size`` with ``--context`` (default 160 px, 1.25): the central 128 px is the inference crop, the
rest is room for random-resized-crop augmentation.

Output, per dataset and split, under ``--cache`` (default ``.cache/crops``, git-ignored):
``{set}_{split}.npy`` (N, S, S, 3) uint8 and ``{set}_{split}.csv`` (file, age, gender, race, how).
``how`` is ``detected`` or, for a chip the detector missed, ``chip`` (UTKFace: the calibrated chip framing);
All-Age-Faces images without a detected face are left out and counted.

    python -m train.preprocess --workers 2
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from agegender.crops.chips import detect_main_face, frame_chip
from agegender.crops.align import crop_face
from agegender.detection.detector import FaceDetector
from agegender.paths import REPO_DIR

from agegender.evaluation.datasets import SETS, Sample, read_split
from .splits import SPLITS

DEFAULT_CACHE = REPO_DIR / ".cache" / "crops"
AAF_PAD = 40  # border around All-Age-Faces photos (UTKFace chips get agegender.crops.chips.CHIP_PAD)

_detector: FaceDetector | None = None


def _init_worker() -> None:
    global _detector
    cv2.setNumThreads(1)
    _detector = FaceDetector("auto", min_score=0.5)


def process(task: tuple[str, str, int, float]) -> tuple[np.ndarray | None, str]:
    """One training crop, framed exactly as the app frames the same image (``predict_crops`` for a UTKFace chip,
    the main face of a photo for All-Age-Faces)."""
    path, dataset, size, context = task
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return None, "unreadable"
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if dataset == "utkface":
        framed = frame_chip(image, _detector, "detect")
        how = "detected" if framed.detection.score > 0 else "chip"
        return crop_face(framed.image, framed.detection, size=size, context=context), how
    det = detect_main_face(image, _detector, AAF_PAD)
    if det is None:
        return None, "no_face"
    return crop_face(image, det, size=size, context=context), "detected"


def build(dataset: str, split: str, out: Path, size: int, context: float, workers: int, limit: int | None) -> dict:
    samples: list[Sample] = read_split(dataset, split)
    if limit:
        samples = samples[:limit]
    tasks = [(str(s.path()), dataset, size, context) for s in samples]
    crops, rows, counts = [], [], {"detected": 0, "chip": 0, "no_face": 0, "unreadable": 0}
    start = time.time()
    with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        for i, (crop, how) in enumerate(pool.imap(process, tasks, chunksize=32)):
            counts[how] += 1
            if crop is not None:
                crops.append(crop)
                s = samples[i]
                rows.append((s.file, s.age, s.gender, s.race, how))
            if (i + 1) % 2000 == 0:
                print(f"  {dataset}/{split}: {i + 1}/{len(tasks)} ({time.time() - start:.0f}s)", flush=True)
    array = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    np.save(out / f"{dataset}_{split}.npy", array)
    with open(out / f"{dataset}_{split}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "age", "gender", "race", "how"])
        writer.writerows(rows)
    counts["seconds"] = round(time.time() - start, 1)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--context", type=float, default=1.25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--splits", nargs="+", default=list(SPLITS))
    parser.add_argument("--limit", type=int, default=None, help="only the first N of each split (smoke tests)")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    report = {"size": args.size, "context": args.context, "detector": "auto", "counts": {}}
    for dataset in args.sets:
        for split in args.splits:
            counts = build(dataset, split, args.cache, args.size, args.context, args.workers, args.limit)
            report["counts"][f"{dataset}_{split}"] = counts
            print(dataset, split, counts, flush=True)
    (args.cache / "preprocess.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
