"""``agegender evaluate``: arguments → labelled samples → :func:`evaluate` → report folder (and, with
``--record``, the headline numbers into the manifest; with ``--age-probs``, the full distributions)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agegender.cli.options import VIEW_SET_TITLES, tta_options, tta_variant
from agegender.evaluation.datasets import SETS, read_split
from agegender.groups import NUM_AGE_BINS
from agegender.paths import data_root
from agegender.evaluation.metrics import NothingToEvaluate
from agegender.evaluation.samples import Labelled, labelled_folder_images, read_labels_csv
from agegender.views import view_set_name


def _resolve_samples(args: argparse.Namespace) -> tuple[list[Labelled], str]:
    """(samples, dataset name for the report) from ``--split`` or PATH/``--labels``.

    ValueError for bad arguments; FileNotFoundError when a dataset is not on disk."""
    if args.split and (args.paths or args.labels):
        raise ValueError("give either --split or PATH/--labels, not both")
    if args.split:
        dataset, _, split = args.split.partition(":")
        if dataset not in SETS or split not in ("train", "val", "test"):
            raise ValueError(f"--split must be DATASET:SPLIT with DATASET in {', '.join(SETS)} and SPLIT in "
                             f"train, val, test (got {args.split!r})")
        return list(read_split(dataset, split)), f"{dataset}-{split}"
    if not args.paths and not args.labels:
        raise ValueError("nothing to evaluate: give PATH ... , --labels CSV or --split DATASET:SPLIT")
    paths = [Path(p) for p in args.paths]
    for p in paths + ([Path(args.labels)] if args.labels else []):
        if not p.exists():
            raise ValueError(f"{p}: no such file or folder")
    if args.labels:
        if any(not p.is_dir() for p in paths):
            raise ValueError("with --labels, PATH must be folders in which the CSV's files are looked up")
        images, missing = read_labels_csv(Path(args.labels), paths)
        if missing:
            print(f"skipped {missing} file(s) listed in {args.labels} but not found", file=sys.stderr)
        return list(images), Path(args.labels).stem
    images, skipped = labelled_folder_images(paths)
    if skipped:
        print(f"skipped {skipped} image(s) whose names carry no UTKFace label (age_gender_race_*.jpg); "
              "use --labels for other names", file=sys.stderr)
    return list(images), paths[0].resolve().name or "images"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_cli(args: argparse.Namespace) -> int:
    """``agegender evaluate``: 0 on success, 2 on bad arguments or weights, 1 if nothing could be evaluated."""
    from agegender.errors import InvalidImageError, WeightsError
    from agegender.estimator import Estimator
    from agegender.evaluation.report import summary_markdown, write_predictions, write_report
    from agegender.evaluation.runner import evaluate

    try:
        samples, dataset = _resolve_samples(args)
    except ValueError as exc:
        print(f"agegender evaluate: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"agegender evaluate: {exc} (is the data under {data_root()}? set AGEGENDER_DATA)", file=sys.stderr)
        return 1
    if (args.limit is not None and args.limit < 1) or args.batch_size < 1:
        print("agegender evaluate: error: --limit and --batch-size must be at least 1", file=sys.stderr)
        return 2
    if not samples:
        where = f" (is the data under {data_root()}? set AGEGENDER_DATA)" if args.split else ""
        print(f"agegender evaluate: no labelled images to evaluate{where}", file=sys.stderr)
        return 1
    mode = args.mode or ("photos" if dataset.startswith("all_age_faces") else "crops")
    if args.device.startswith("cuda") and not _cuda_available():
        print(f"agegender evaluate: error: --device {args.device}, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    tta = {**tta_options(args), "outer_views": getattr(args, "outer_views", None)}
    try:
        estimator = Estimator(model=args.model, detector=args.detector, device=args.device,
                              weights=None if args.untrained else (args.weights or "bundled"),
                              calibrate=not args.no_calibration, engine=args.engine, **tta)
    except (WeightsError, ValueError, RuntimeError) as exc:  # RuntimeError: a malformed --device
        print(f"agegender evaluate: error: {exc}", file=sys.stderr)
        return 2
    try:
        metrics, rows = evaluate(estimator, samples, mode=mode, batch_size=args.batch_size, limit=args.limit,
                                 seed=args.seed, chip_framing=args.chip_framing, keep_age_probs=args.age_probs,
                                 degrade_seed=args.degrade)
    except (NothingToEvaluate, InvalidImageError, ValueError) as exc:
        print(f"agegender evaluate: {exc}", file=sys.stderr)
        return 1
    finally:
        estimator.close()
    template = mode == "crops" and args.chip_framing == "template"
    degraded = "" if args.degrade is None else "-degraded" + (f"{args.degrade}" if args.degrade else "")
    variant = mode + ("-template" if template else "") + tta_variant(tta) + degraded
    out_dir = Path(args.out or f"reports/eval-{estimator.model_name}-{dataset}-{variant}")
    title = (f"{estimator.model_name} on {dataset} ({mode}{', chip template' if template else ''}"
             f"{VIEW_SET_TITLES[view_set_name(**tta)]}{', degraded' if degraded else ''})")
    extra = {"dataset": dataset, "mode": mode, "views": view_set_name(**tta),
             "precision": estimator.engine.describe().get("precision", "float32")}
    if degraded:
        extra["degrade_seed"] = args.degrade
    if mode == "crops":
        extra["chip_framing"] = args.chip_framing
    report = write_report(metrics, out_dir, title, extra=extra)
    if args.age_probs:
        write_age_probs(rows, out_dir)
    write_predictions(rows, out_dir)
    if args.record:
        if not estimator.weights_info.get("file") or args.weights:
            print("agegender evaluate: --record needs the bundled weights (not --weights/--untrained)", file=sys.stderr)
            return 2
        record_in_manifest(estimator.weights_info["file"], f"{dataset}:{variant}", metrics, out_dir)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(summary_markdown(metrics, title, extra))
        print(f"report written to {out_dir}/")
    return 0


def write_age_probs(rows: Sequence[dict], out_dir: Path) -> Path:
    """``age_probs.npz`` beside predictions.csv: file names and (N, 101) float32 distributions of the found
    faces, in row order, and the rows' ``age_probs`` removed. Calibration needs the whole distribution."""
    found = [r for r in rows if r.get("age_probs") is not None]
    path = Path(out_dir) / "age_probs.npz"
    np.savez_compressed(path, files=np.array([r["file"] for r in found]),
                        age_probs=np.stack([r["age_probs"] for r in found]).astype(np.float32)
                        if found else np.zeros((0, NUM_AGE_BINS), np.float32))
    for row in rows:
        row.pop("age_probs", None)
    return path


def headline_metrics(metrics: dict) -> dict[str, Any]:
    """The few numbers a model card quotes, flat: n, MAE, RMSE, ±2/±5, over-18 accuracy with its false-adult
    and false-minor rates, gender accuracy, fairface9 group accuracy, and detection rate / ms per face."""
    over = metrics.get("over_18", {})
    run = metrics.get("run", {})
    return {
        "n": metrics.get("n"), "mae": metrics.get("mae"), "rmse": metrics.get("rmse"),
        "within_2": metrics.get("within_2"), "within_5": metrics.get("within_5"),
        "over18_accuracy": over.get("accuracy"), "false_adult_rate": over.get("false_adult_rate"),
        "false_minor_rate": over.get("false_minor_rate"), "gender_accuracy": metrics.get("gender_accuracy"),
        "fairface9_accuracy": metrics.get("groups", {}).get("fairface9", {}).get("accuracy"),
        "detection_rate": run.get("detection_rate"), "ms_per_face": run.get("ms_per_face"),
    }


def record_in_manifest(weights_file: str, key: str, metrics: dict, report_dir: Path) -> None:
    """Put the headline numbers of an evaluation into the model's manifest entry (``metrics.test[key]``), with
    the path of the full report, so the manifest, README and app quote the same measured figures."""
    from agegender.weights import read_manifest, write_manifest

    manifest = read_manifest()
    entry = manifest["files"][weights_file]
    headline = headline_metrics(metrics)
    headline["report"] = str(report_dir)
    entry.setdefault("metrics", {}).setdefault("test", {})[key] = headline
    write_manifest(manifest)

