"""Cache training crops made by the app's own pipeline: detect → calibrated crop.

Training must see exactly what the app feeds the model. Every image goes through ``FaceDetector("auto")`` and
:func:`agegender.crop.crop_face`; UTKFace chips are first pasted into a larger canvas (as in the calibration),
All-Age-Faces photos get a replicated border so faces near their black rotated edges are still found. Crops are
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
import math
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from agegender.crop import chip_detection, crop_face
from agegender.detection import FaceDetector
from agegender.paths import REPO_DIR

from agegender.datasets import SETS, Sample, read_split
from .splits import SPLITS

DEFAULT_CACHE = REPO_DIR / ".cache" / "crops"
UTK_PAD = 100  # as in train/calibrate_crop.py
AAF_PAD = 40

_detector: FaceDetector | None = None


def _init_worker() -> None:
    global _detector
    cv2.setNumThreads(1)
    _detector = FaceDetector("auto", min_score=0.5)


def pick_face(dets, shape) -> object | None:
    """The face the label belongs to: the largest, preferring ones near the centre."""
    if not dets:
        return None
    h, w = shape[:2]

    def key(d):
        cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
        off = math.hypot((cx - w / 2) / w, (cy - h / 2) / h)
        return d.width * d.height * (1.0 - off)

    return max(dets, key=key)


def process(task: tuple[str, str, int, float]) -> tuple[np.ndarray | None, str]:
    path, dataset, size, context = task
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return None, "unreadable"
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    pad = UTK_PAD if dataset == "utkface" else AAF_PAD
    canvas = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    det = pick_face(_detector.detect(canvas), canvas.shape)
    if det is not None:
        return crop_face(canvas, det, size=size, context=context), "detected"
    if dataset == "utkface" and image.shape[:2] == (200, 200):
        return crop_face(image, chip_detection(200), size=size, context=context), "chip"
    return None, "no_face"


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
