"""Gender in the wild, the app's way: ``python -m agegender.evaluation.aflw --split val|test [--degrade] [--model M]``.

UTKFace and All-Age-Faces are mostly frontal, well-lit faces; MTFL's AFLW part (2,995 Flickr faces: profiles,
expressions, blur, children; gender and head pose, no age) is where gender meets the wild (issue 27 bar: ≥ 92 % on
the held-out part for the default model). Training's ``val_gender_acc_mtfl_aflw`` scores one view of the cached
crops; this scores what a user gets: each image framed as the app frames a face chip (replicated border, detect,
calibrated crop; the chip template where no face is found), the model's default test-time views, P(female) ≥ 0.5.
The splits are the committed ``train/splits/mtfl_aflw_{train,val,test}.txt`` (by content hash, stratified by
gender × pose); ``test`` is measured once, after the model is chosen on validation. Writes ``report.json`` and
``predictions.csv`` to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from agegender.paths import REPO_DIR, data_root

NAME = "mtfl_aflw"
SPLITS_DIR = REPO_DIR / "train" / "splits"
POSES = {1: "left profile", 2: "left", 3: "frontal", 4: "right", 5: "right profile"}


@dataclass(frozen=True)
class AflwFace:
    file: str  # relative to mtfl_aflw/images, e.g. "0001-image20056.jpg"
    gender: int  # 0 male, 1 female (the project's coding; the release uses 1 male, 2 female)
    pose: int  # 1 left profile … 3 frontal … 5 right profile


def read_labels(root: Path | None = None) -> list[AflwFace]:
    """``labels.txt`` of the release (paths ``AFLW/NAME``; gender 1 male, 2 female), sorted by file."""
    faces = []
    for line in ((root or data_root()) / NAME / "labels.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) != 15:
            continue
        gender = {"1": 0, "2": 1}.get(parts[11])
        if gender is None:
            raise ValueError(f"{NAME}/labels.txt: gender {parts[11]!r} in {line!r}")
        faces.append(AflwFace(parts[0].split("/", 1)[-1], gender, int(parts[14])))
    return sorted(faces, key=lambda f: f.file)


def read_split(split: str, root: Path | None = None, splits_dir: Path = SPLITS_DIR) -> list[AflwFace]:
    names = set((splits_dir / f"{NAME}_{split}.txt").read_text().split())
    return [f for f in read_labels(root) if f.file in names]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion k/n (how far one split's accuracy can be trusted)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))


def evaluate(estimator: Any, faces: Sequence[AflwFace], degrade_seed: int | None = None,
             root: Path | None = None, batch: int = 32) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Gender accuracy of ``estimator`` on ``faces`` (overall and per head pose) and one row per face."""
    from agegender.evaluation.degrade import degrade
    from agegender.io.images import load_image

    images = (root or data_root()) / NAME / "images"
    rows: list[dict[str, Any]] = []
    for start in range(0, len(faces), batch):
        chunk = faces[start:start + batch]
        pictures = [load_image(images / f.file) for f in chunk]
        if degrade_seed is not None:
            pictures = [degrade(p, degrade_seed, f.file, "crops") for p, f in zip(pictures, chunk)]
        for f, out in zip(chunk, estimator.predict_crops(pictures)):
            rows.append({"file": f.file, "gender": f.gender, "pose": f.pose, "p_female": round(out.p_female, 4),
                         "correct": int((out.p_female >= 0.5) == bool(f.gender)), "detected": int(out.score > 0)})
    return summarise(rows), rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def acc(sel: list[dict[str, Any]]) -> dict[str, Any]:
        k, n = sum(r["correct"] for r in sel), len(sel)
        low, high = wilson(k, n)
        return {"n": n, "accuracy": round(k / n, 4) if n else None, "ci95": [round(low, 4), round(high, 4)]}

    return {"all": acc(rows), "detected": sum(r["detected"] for r in rows),
            "by_gender": {g: acc([r for r in rows if r["gender"] == i]) for i, g in enumerate(("male", "female"))},
            "by_pose": {POSES[p]: acc([r for r in rows if r["pose"] == p]) for p in POSES
                        if any(r["pose"] == p for r in rows)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--model", default=None, help="backbone (default: the bundled default model)")
    parser.add_argument("--degrade", type=int, nargs="?", const=0, default=None, metavar="SEED",
                        help="the degraded copy of every image (agegender.evaluation.degrade)")
    parser.add_argument("--limit", type=int, default=None, help="first N faces (smoke runs)")
    parser.add_argument("--out", type=Path, default=None, help="default reports/aflw-gender-MODEL-SPLIT[-degraded]")
    args = parser.parse_args(argv)
    from agegender.estimator import Estimator

    est = Estimator(model=args.model)
    try:
        report, rows = evaluate(est, read_split(args.split)[:args.limit], args.degrade)
    finally:
        est.close()
    report = {"model": est.model_name, "split": args.split, "degrade_seed": args.degrade, **report}
    out = args.out or REPO_DIR / "reports" / (f"aflw-gender-{est.model_name}-{args.split}"
                                             + ("" if args.degrade is None else "-degraded"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    with open(out / "predictions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    a = report["all"]
    print(f"{est.model_name} AFLW {args.split}{' degraded' if args.degrade is not None else ''}: gender "
          f"{a['accuracy']:.1%} of {a['n']} (95 % CI {a['ci95'][0]:.1%}–{a['ci95'][1]:.1%}); "
          + ", ".join(f"{k} {v['accuracy']:.1%} ({v['n']})" for k, v in report["by_pose"].items()),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
