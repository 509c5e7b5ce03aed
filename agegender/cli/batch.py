"""``agegender batch INPUT... OUTPUT``: the predict rows of many images, on Ray Data (:mod:`agegender.distributed`).

Runs on a local Ray started for the call, or on a running cluster (``--address`` or ``RAY_ADDRESS``). Needs the
``[scale]`` extra (``pip install -e ".[scale]"``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agegender.cli.options import add_model_arguments, estimator_options


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "batch", help="predict many images on Ray Data (local or a cluster) into Parquet or JSON Lines files",
        description="One row per face, and one per image without faces or that could not be read (the columns of "
                    "predict --csv), written as Parquet (default) or JSON Lines files into OUTPUT, an empty "
                    "folder. INPUT: folders, globs ('photos/*.jpg'), list files (.txt: one path or URI a line) "
                    "or files.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folders, globs, list files (.txt) or image files")
    p.add_argument("output", metavar="OUTPUT", help="output folder (must be empty, see --overwrite)")
    p.add_argument("--workers", type=int, default=1, help="Ray actors, each with one Estimator on one core")
    p.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    p.add_argument("--overwrite", action="store_true", help="empty OUTPUT first if it holds files")
    p.add_argument("--crops", action="store_true", help="each input is a face chip (as predict --crops)")
    p.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    p.add_argument("--batch-size", type=int, default=16, help="images per map_batches call")
    p.add_argument("--address", default=None,
                   help="a running Ray cluster ('auto', 'ray://head:10001'); default RAY_ADDRESS, else local")
    p.add_argument("--progress", action="store_true", help="show Ray Data's progress bars")
    add_model_arguments(p)
    p.set_defaults(func=cmd_batch)
    return p


def cmd_batch(args: argparse.Namespace) -> int:
    try:
        from agegender.distributed.batch import run_batch
        import ray  # noqa: F401  (the [scale] extra)
    except ImportError:
        print('agegender batch: needs Ray Data: pip install -e ".[scale]"', file=sys.stderr)
        return 2
    try:
        summary = run_batch(args.inputs, args.output, workers=args.workers, estimator_options=estimator_options(args),
                            crops=args.crops, fmt=args.format, overwrite=args.overwrite, recursive=args.recursive,
                            batch_size=args.batch_size, address=args.address, progress=args.progress)
    except ValueError as exc:
        print(f"agegender batch: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"images": summary.images, "rows": summary.rows, "errors": summary.errors,
                      "output": summary.output, "seconds": round(summary.seconds, 2),
                      "images_per_s": round(summary.images_per_s, 2)}))
    return 1 if summary.errors else 0
