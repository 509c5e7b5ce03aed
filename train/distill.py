"""Distillation targets: the bundled EfficientNet-Lite0's age distributions on the training crops, computed once.

``python -m train --distill-weight W`` adds ``W × CE(teacher distribution, student)`` to the age loss: the teacher's
full distribution (how unsure it is, which neighbouring ages it confuses) is a softer, less noisy target than one
UTKFace label, which is often off by years. The teacher sees each cached crop as the app does by default — its
calibrated crop, a 10 % tighter and a 10 % looser one (scale TTA), each also mirrored (flip TTA) — on the
*unaugmented* crop, so its targets do not depend on the training run. Whether it helps is for validation to say
(compare a run with and without, same seed and budget).

    python -m train.distill --cache .cache/crops200      # writes {cache}/distill_{set}_train.npy (N, 102) fp16

Columns 0-100 are the teacher's age probabilities, column 101 its P(female). On this 2-core CPU: ~22k crops × 6
views of Lite0 at 160 px, roughly 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from agegender.evaluation.datasets import SETS

from .data import cache_context
from .preprocess import DEFAULT_CACHE

SCALES = (0.9, 1.0, 1.1)  # agegender.estimator.SCALE_TTA_CONTEXTS
BATCH = 64


def teacher_file(cache: Path, dataset: str, split: str = "train") -> Path:
    return cache / f"distill_{dataset}_{split}.npy"


def views(crops: np.ndarray, context: float, size: int) -> np.ndarray:
    """(N, V, size, size, 3): the inference crop of each cached crop at the scale-TTA framings."""
    side = crops.shape[1]
    out = np.empty((len(crops), len(SCALES), size, size, 3), np.uint8)
    for j, scale in enumerate(SCALES):
        crop = min(side, round(side / context * scale))
        lo = (side - crop) // 2
        for i, image in enumerate(crops):
            patch = image[lo:lo + crop, lo:lo + crop]
            out[i, j] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if crop > size
                                   else cv2.INTER_LINEAR)
    return out


def compute(cache: Path, datasets: tuple[str, ...], split: str = "train", teacher: str = "efficientnet_lite0",
            limit: int | None = None, log=print) -> dict[str, int]:
    from agegender import Estimator

    est = Estimator(model=teacher, detector="short", flip_tta=True, scale_tta=True)
    context = cache_context(cache)
    done = {}
    try:
        for dataset in datasets:
            crops = np.load(cache / f"{dataset}_{split}.npy", mmap_mode="r")
            n = len(crops) if limit is None else min(limit, len(crops))
            out = np.zeros((n, 102), np.float16)
            started = time.monotonic()
            for lo in range(0, n, BATCH):
                probs, p_female = est.predict_batch(views(np.asarray(crops[lo:lo + BATCH][: n - lo]), context,
                                                          est.input_size))
                out[lo:lo + len(probs), :101] = probs
                out[lo:lo + len(probs), 101] = p_female
                if (lo // BATCH) % 50 == 0:
                    log(f"{dataset}_{split}: {lo + len(probs)}/{n} ({time.monotonic() - started:.0f}s)")
            np.save(teacher_file(cache, dataset, split), out)
            done[dataset] = n
        (cache / "distill.json").write_text(json.dumps({"teacher": teacher, "weights": est.weights_info.get("file"),
                                                        "sha256": est.weights_info.get("sha256"),
                                                        "scales": SCALES, "flip": True, "rows": done}, indent=1))
    finally:
        est.close()
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--teacher", default="efficientnet_lite0", help="a bundled model")
    parser.add_argument("--limit", type=int, default=None, help="first N crops of each set (smoke tests)")
    args = parser.parse_args(argv)
    print(compute(args.cache, tuple(args.sets), teacher=args.teacher, limit=args.limit))


if __name__ == "__main__":
    main()
