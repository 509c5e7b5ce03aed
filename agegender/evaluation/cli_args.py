"""The ``agegender evaluate`` arguments, apart from the command itself (:mod:`.cli`): ``agegender --help`` builds
every subcommand's parser, and this module keeps that cheap (no OpenCV, Matplotlib or SciPy until the command
runs)."""

from __future__ import annotations

import argparse
from typing import Any

from agegender.cli.options import add_tta_arguments

CHIP_FRAMINGS = ("detect", "template")  # as agegender.crops.chips.CHIP_FRAMINGS (a test keeps them equal)


def _run_cli(args: argparse.Namespace) -> int:
    from agegender.evaluation.cli import run_cli

    return run_cli(args)


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to the ``agegender`` CLI; its ``func`` is :func:`run_cli`."""
    p = subparsers.add_parser(
        "evaluate", help="measure age/gender accuracy on labelled faces and write a report",
        description="Measure age and gender accuracy on labelled faces. Labels come from --split (the committed "
                    "dataset splits), from UTKFace-style file names (age_gender_race_*.jpg) in PATH, or from "
                    "--labels (CSV: file, age, gender as 0/1 or male/female, optional race). Prints a summary "
                    "and writes report.json, summary.md, predictions.csv and plots to --out.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="folders (or files) of face chips or photos")
    p.add_argument("--split", metavar="DATASET:SPLIT", help="e.g. utkface:test or all_age_faces:test")
    p.add_argument("--labels", metavar="CSV", help="labels for PATH (or for images next to the CSV)")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--crops", dest="mode", action="store_const", const="crops",
                       help="images are face chips, framed as the training crops (default, except All-Age-Faces)")
    modes.add_argument("--photos", dest="mode", action="store_const", const="photos",
                       help="full pipeline on each image, main face (default for all_age_faces)")
    modes.add_argument("--pasted", dest="mode", action="store_const", const="pasted",
                       help="paste each chip into a larger photo-like canvas, then detect → crop → predict")
    p.add_argument("--chip-framing", default="detect", choices=CHIP_FRAMINGS,
                   help="--crops: detect each chip's face on a padded copy as training did (default), or use the "
                        "fixed chip template (no detection)")
    p.add_argument("--model", default=None, help="backbone name (default: the bundled default model)")
    p.add_argument("--weights", default=None, help="a .safetensors file instead of the bundled weights")
    p.add_argument("--untrained", action="store_true", help=argparse.SUPPRESS)  # random weights: tests only
    p.add_argument("--detector", default="auto", choices=("auto", "short", "full"))
    p.add_argument("--device", default="cpu", help="torch device for the network (cpu, cuda…)")
    add_tta_arguments(p)
    p.add_argument("--alternate-views", dest="outer_views", action="store_const", const="alternate", default=None,
                   help="unsure faces get two alternate scale views whatever the model's policy says (how the age "
                        "check may run an age-only second opinion; agegender.views)")
    p.add_argument("--limit", type=int, default=None, help="evaluate a seeded random subset of N images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="for --limit subsets and --pasted positions")
    p.add_argument("--degrade", type=int, nargs="?", const=0, default=None, metavar="SEED",
                   help="evaluate a degraded copy of every image (old prints, blur, small faces, grain, JPEG; "
                        "agegender.evaluation.degrade), the same for a SEED (default 0); crops and photos modes")
    p.add_argument("--out", default=None, help="report folder (default reports/eval-MODEL-DATASET-MODE)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the summary table")
    p.add_argument("--age-probs", action="store_true",
                   help="also write age_probs.npz: each found face's full 101-bin age distribution (for calibration)")
    p.add_argument("--no-calibration", action="store_true",
                   help="score the network's raw distribution, without the manifest's calibration (to refit it)")
    p.add_argument("--record", action="store_true",
                   help="also store the headline metrics in weights/MANIFEST.json under metrics.test")
    p.add_argument("--engine", choices=("auto", "onnx", "torch"), default="auto",
                   help="auto (default): onnxruntime where the model's ONNX graph is bundled, else torch")
    p.set_defaults(func=_run_cli)
    return p

