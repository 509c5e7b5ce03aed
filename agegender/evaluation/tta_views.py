"""Which test-time views earn their cost, chosen on validation (issue 30):
``python -m agegender.evaluation.tta_views --model efficientnet_lite0``.

The default runs six views per face: the calibrated crop zoomed in 10 %, as is and zoomed out 10 %, each mirrored.
The scale views triple the network time for a tenth of a year. This runs every view of every validation face once
(UTKFace val chips framed as ``--crops`` frames them, All-Age-Faces val photos through the detector, main face),
keeps each view's own output, and then scores view policies offline on the same outputs:

* ``full``: all six views (today's default); ``flip``: the calibrated crop and its mirror (two views);
* ``adaptive k``: the two flip views, plus the four scale views only for a face whose original and mirrored views
  disagree by more than ``k`` years of expected age (the faces where one framing is unstable);
* ``adaptive-std s``: the same, triggered by the spread (std, years) of the flip-averaged age distribution.

Each policy's pooled MAE (uncalibrated expected age; the calibration is fitted afterwards for whatever is chosen)
and its mean number of views per face. The rule of the issue: the cheapest policy whose pooled MAE is within 0.02
years of ``full``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agegender.crops.align import crop_face
from agegender.crops.chips import main_face
from agegender.estimator import SCALE_TTA_CONTEXTS, Estimator
from agegender.evaluation.datasets import read_split
from agegender.groups import AGES
from agegender.io.images import load_image

CONTEXTS = SCALE_TTA_CONTEXTS  # (0.9, 1.0, 1.1): index 1 is the calibrated crop
THRESHOLDS_YEARS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
THRESHOLDS_STD = (6.0, 7.0, 8.0, 9.0, 10.0)


def face_views(est: Estimator, sample, dataset: str) -> np.ndarray | None:
    """(6, 101 + 1) outputs: rows 0-2 the contexts, 3-5 their mirrors; columns the age distribution, P(female)."""
    rgb = load_image(sample.path())
    if dataset == "utkface":
        framed = est.frame_chips([rgb])[0]
        image, det = framed.image, framed.detection
    else:
        _, dets = est.detect(rgb)
        det = main_face(dets, rgb.shape) if dets else None
        if det is None:
            return None
        image = rgb
    crops = np.stack([crop_face(image, det, size=est.input_size, context=c) for c in CONTEXTS])
    batch = np.concatenate([crops, np.ascontiguousarray(crops[:, :, ::-1])])
    age_probs, p_female = est.engine.run(batch)
    return np.concatenate([age_probs, p_female[:, None]], axis=1)


def collect(est: Estimator, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    outputs, ages = [], []
    for dataset in ("utkface", "all_age_faces"):
        samples = read_split(dataset, "val")[:limit]
        started = time.perf_counter()
        for i, sample in enumerate(samples):
            views = face_views(est, sample, dataset)
            if views is not None:
                outputs.append(views)
                ages.append(sample.age)
            if i % 500 == 499:
                print(f"  {dataset}: {i + 1}/{len(samples)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return np.stack(outputs), np.asarray(ages, np.float64)


def expected(probs: np.ndarray) -> np.ndarray:
    return probs @ AGES


def score(outputs: np.ndarray, ages: np.ndarray) -> dict[str, Any]:
    probs = outputs[:, :, :-1]
    full = expected(probs.mean(1))
    flip_probs = probs[:, [1, 4]].mean(1)
    flip = expected(flip_probs)
    disagree = np.abs(expected(probs[:, 1]) - expected(probs[:, 4]))
    spread = np.sqrt(np.maximum(flip_probs @ AGES**2 - flip**2, 0))
    policies: dict[str, Any] = {"full": _row(full, ages, 6.0), "flip": _row(flip, ages, 2.0)}
    for k in THRESHOLDS_YEARS:
        more = disagree > k
        policies[f"adaptive {k:g} y"] = _row(np.where(more, full, flip), ages, 2.0 + 4.0 * more.mean())
    for s in THRESHOLDS_STD:
        more = spread > s
        policies[f"adaptive-std {s:g} y"] = _row(np.where(more, full, flip), ages, 2.0 + 4.0 * more.mean())
    best = policies["full"]["mae"]
    eligible = {name: p for name, p in policies.items() if p["mae"] <= best + 0.02}
    choice = min(eligible, key=lambda name: (eligible[name]["views_per_face"], eligible[name]["mae"]))
    return {"faces": int(len(ages)), "policies": policies, "choice": choice}


def _row(pred: np.ndarray, ages: np.ndarray, views: float) -> dict[str, float]:
    return {"mae": round(float(np.abs(pred - ages).mean()), 4), "views_per_face": round(float(views), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="backbone (default: the bundled default model)")
    parser.add_argument("--limit", type=int, default=None, help="first N faces of each validation split")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default reports/tta-views-MODEL.json)")
    args = parser.parse_args(argv)
    est = Estimator(model=args.model, calibrate=False)
    try:
        outputs, ages = collect(est, args.limit)
    finally:
        est.close()
    result = {"model": est.model_name, **score(outputs, ages)}
    out = args.out or Path(f"reports/tta-views-{est.model_name}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    for name, p in result["policies"].items():
        print(f"{name:22s} MAE {p['mae']:.4f}  views/face {p['views_per_face']:.2f}")
    print(f"choice: {result['choice']} ({out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
