"""MTFL's AFLW part (2,995 in-the-wild faces, gender and head pose, no age): split and crop cache.

UTKFace and All-Age-Faces are mostly frontal, well-lit faces; AFLW's Flickr faces have profile views, expressions,
blur and children. Two uses (see ``python -m train --aflw-val/--aflw-train``):

* **validation of gender in the wild** (``val_gender_acc_mtfl_aflw``; never part of the age MAE that selects
  checkpoints);
* **gender training** on its train split, with the age loss masked (age -1 in the cache: an all-zero age target).

Split (fixed seed, written to ``train/splits/mtfl_aflw_{train,val,test}.txt``, committed like the other sets'):
byte-identical files are grouped by content hash, then stratified by (gender, pose) into 50 / 25 / 25 %. The
test quarter is for a one-time measurement after every choice is made on val.

Crops are framed as the app frames a face chip (:func:`agegender.crops.chips.frame_chip`: replicated border, detect,
calibrated crop; the chip template where no face is found), at the size and context of the existing cache:

    python -m train.aflw --cache .cache/crops200 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
from collections import defaultdict
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from agegender.evaluation.aflw import NAME, SPLITS_DIR, AflwFace, read_labels, read_split  # noqa: F401
from agegender.paths import data_root

from .preprocess import DEFAULT_CACHE

FRACTIONS = {"train": 0.5, "val": 0.25, "test": 0.25}
NO_AGE = -1  # the cache's age for a face without an age label


def make_splits(faces: list[AflwFace], root: Path | None = None, seed: int = 0) -> dict[str, list[AflwFace]]:
    """Deduplicated by content, stratified by (gender, pose), shuffled with ``seed``."""
    images = (root or data_root()) / NAME / "images"
    by_hash: dict[str, AflwFace] = {}
    for face in faces:
        digest = hashlib.sha256((images / face.file).read_bytes()).hexdigest()
        by_hash.setdefault(digest, face)  # faces are sorted: the first name of a duplicate group is kept
    strata: dict[tuple[int, int], list[AflwFace]] = defaultdict(list)
    for face in by_hash.values():
        strata[(face.gender, face.pose)].append(face)
    rng = random.Random(seed)
    out: dict[str, list[AflwFace]] = {k: [] for k in FRACTIONS}
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda f: f.file)
        rng.shuffle(members)
        n_test, n_val = round(len(members) * FRACTIONS["test"]), round(len(members) * FRACTIONS["val"])
        out["test"] += members[:n_test]
        out["val"] += members[n_test:n_test + n_val]
        out["train"] += members[n_test + n_val:]
    return {k: sorted(v, key=lambda f: f.file) for k, v in out.items()}


_detector = None


def _init_worker() -> None:
    global _detector
    from agegender.detection.detector import FaceDetector

    cv2.setNumThreads(1)
    _detector = FaceDetector("auto", min_score=0.5)


def _crop(task: tuple[str, int, float]) -> tuple[np.ndarray | None, str]:
    from agegender.crops.chips import frame_chip
    from agegender.crops.align import crop_face

    path, size, context = task
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return None, "unreadable"
    framed = frame_chip(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), _detector, "detect")
    return crop_face(framed.image, framed.detection, size=size, context=context), \
        "detected" if framed.detection.score > 0 else "chip"


def build_cache(cache: Path, splits: tuple[str, ...] = ("train", "val"), workers: int = 2,
                limit: int | None = None, root: Path | None = None) -> dict[str, dict[str, int]]:
    """``{cache}/mtfl_aflw_{split}.npy/.csv`` at the cache's own crop size and context (its preprocess.json)."""
    meta = json.loads((cache / "preprocess.json").read_text()) if (cache / "preprocess.json").is_file() else {}
    size, context = int(meta.get("size", 160)), float(meta.get("context", 1.25))
    images = (root or data_root()) / NAME / "images"
    report = {}
    for split in splits:
        faces = read_split(split, root)[:limit]
        counts = {"detected": 0, "chip": 0, "unreadable": 0}
        crops, rows = [], []
        with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for face, (crop, how) in zip(faces, pool.imap(_crop, [(str(images / f.file), size, context)
                                                                    for f in faces], chunksize=32)):
                counts[how] += 1
                if crop is not None:
                    crops.append(crop)
                    rows.append((face.file, NO_AGE, face.gender, -1, how))
        np.save(cache / f"{NAME}_{split}.npy", np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8))
        with open(cache / f"{NAME}_{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "age", "gender", "race", "how"])
            writer.writerows(rows)
        report[split] = counts
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="an existing train.preprocess cache")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=list(FRACTIONS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N of each split (smoke tests)")
    parser.add_argument("--write-splits", action="store_true", help=f"(re)write {SPLITS_DIR}/{NAME}_*.txt first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.write_splits or not (SPLITS_DIR / f"{NAME}_train.txt").is_file():
        for split, faces in make_splits(read_labels(), seed=args.seed).items():
            (SPLITS_DIR / f"{NAME}_{split}.txt").write_text("".join(f.file + "\n" for f in faces))
            print(f"{NAME}_{split}: {len(faces)} faces, {sum(f.gender for f in faces)} female")
    args.cache.mkdir(parents=True, exist_ok=True)
    print(build_cache(args.cache, tuple(args.splits), args.workers, args.limit))


if __name__ == "__main__":
    main()
