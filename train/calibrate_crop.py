"""Fit the crop calibration: where BlazeFace puts its keypoints and box on a UTKFace chip.

Each sampled 200×200 chip is pasted into a 400×400 canvas (border replicated, so the detector sees an ordinary
photo-like frame), both BlazeFace models run on it, and we record the detection in *chip* coordinates. The
median keypoint positions become the alignment template; the median offset/scale between the box and the chip
become the box fallback. Writes ``agegender/crops/crop_calibration.json`` and prints how well the fitted crop
reproduces the chips (IoU of the crop square with the chip square).

    python -m train.calibrate_crop --n 2000
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import cv2
import numpy as np

from agegender.crops.align import ALIGN_POINTS, CALIBRATION_FILE, crop_transform, load_calibration
from agegender.detection.detector import FaceDetector
from agegender.paths import data_root

CHIP = 200
PAD = 100


def paste(chip: np.ndarray) -> np.ndarray:
    return cv2.copyMakeBorder(chip, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)


def best_detection(dets, canvas_centre: float):
    """The detection nearest the canvas centre (the pasted chip), or None."""
    if not dets:
        return None
    return min(dets, key=lambda d: math.hypot((d.box[0] + d.box[2]) / 2 - canvas_centre,
                                              (d.box[1] + d.box[3]) / 2 - canvas_centre))


def fit(samples: list[dict]) -> dict:
    kps = np.array([s["kps"] for s in samples])  # chip-unit coordinates
    template = np.median(kps, axis=0)
    dx, dy, sc = (np.median([s[k] for s in samples]) for k in ("dx", "dy", "scale"))
    return {"template": template.round(5).tolist(), "box": {"dx": round(float(dx), 5), "dy": round(float(dy), 5),
                                                            "scale": round(float(sc), 5)}}


def square_iou(matrix: np.ndarray, size: int) -> float:
    """IoU (by polygon rasterisation) between the crop square mapped back to the canvas and the chip square."""
    inv = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64)
    poly = (inv[:, :2] @ corners.T).T + inv[:, 2]
    canvas = CHIP + 2 * PAD
    a = np.zeros((canvas * 2, canvas * 2), np.uint8)
    b = np.zeros_like(a)
    cv2.fillPoly(a, [np.round((poly + canvas / 2) * 1).astype(np.int32)], 1)
    cv2.rectangle(b, (PAD + canvas // 2, PAD + canvas // 2), (PAD + CHIP + canvas // 2 - 1, PAD + CHIP + canvas // 2 - 1), 1, -1)
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return float(inter / max(union, 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="number of UTKFace chips to sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    args = parser.parse_args(argv)

    files = sorted((data_root() / "utkface" / "images").glob("*.jpg"))
    if not files:
        raise SystemExit(f"no UTKFace images under {data_root() / 'utkface' / 'images'} (set AGEGENDER_DATA)")
    random.Random(args.seed).shuffle(files)
    files = files[: args.n]
    detectors = {"short": FaceDetector("short", min_score=0.5), "full": FaceDetector("full", min_score=0.5)}
    centre = (CHIP + 2 * PAD) / 2
    samples: dict[str, list[dict]] = {"short": [], "full": []}
    for path in files:
        chip = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        if chip.shape[:2] != (CHIP, CHIP):
            continue
        canvas = paste(chip)
        for source, det in detectors.items():
            d = best_detection(det.detect(canvas), centre)
            if d is None:
                continue
            kps = (d.keypoints[:ALIGN_POINTS] - PAD) / CHIP
            x1, y1, x2, y2 = d.box
            side = math.sqrt((x2 - x1) * (y2 - y1))
            (rx, ry), (lx, ly) = d.keypoints[0], d.keypoints[1]
            angle = math.atan2(ly - ry, lx - rx)
            c, s = math.cos(-angle), math.sin(-angle)
            off = np.array([centre - (x1 + x2) / 2, centre - (y1 + y2) / 2])
            off = np.array([[c, -s], [s, c]]) @ off
            samples[source].append({"kps": kps.tolist(), "dx": off[0] / side, "dy": off[1] / side,
                                    "scale": CHIP / side, "det": d})
    calibration = {"chip_size": CHIP, "canvas_pad": PAD, "n_sampled": len(files), "seed": args.seed,
                   "template": {}, "box": {}, "fit": {}}
    for source, rows in samples.items():
        f = fit(rows)
        calibration["template"][source] = f["template"]
        calibration["box"][source] = f["box"]
    args.out.write_text(json.dumps(calibration, indent=2) + "\n")
    load_calibration.cache_clear()
    for source, rows in samples.items():
        ious = [square_iou(crop_transform(r["det"], 128), 128) for r in rows]
        calibration["fit"][source] = {
            "detected": len(rows), "detection_rate": round(len(rows) / len(files), 4),
            "crop_vs_chip_iou_mean": round(float(np.mean(ious)), 4),
            "crop_vs_chip_iou_p10": round(float(np.percentile(ious, 10)), 4),
        }
    args.out.write_text(json.dumps(calibration, indent=2) + "\n")
    load_calibration.cache_clear()
    print(json.dumps({k: calibration[k] for k in ("box", "fit")}, indent=2))


if __name__ == "__main__":
    main()
