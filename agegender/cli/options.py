"""What the ``agegender`` commands share: the test-time augmentation switches (spelled and mapped the same way as
``Estimator(flip_tta=..., scale_tta=...)`` in ``predict``, ``check``, ``evaluate`` and ``batch``), the model and
detector options and the Estimator they build, and the expansion of folders into image files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable

from agegender.groups import PRESETS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def add_tta_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help="test-time augmentation (default on, as in the app): each face also mirrored; "
                             "--no-tta: one plain pass per face, no scales either")
    parser.add_argument("--scale-tta", action=argparse.BooleanOptionalAction, default=True,
                        help="also crop faces 10%% tighter and looser and average (default on, for the faces "
                             "the model's validated view policy picks; --no-scale-tta: mirror only)")


def tta_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Estimator`` keyword arguments for the parsed TTA switches (``--no-tta`` turns both off)."""
    return {"flip_tta": bool(args.tta), "scale_tta": bool(args.tta and args.scale_tta)}


VIEW_SET_SUFFIXES = {"validated": "", "alternate": "-alt-views", "mirror": "-flip-tta", "scales": "-scale-tta", "single": "-no-tta"}
"""Report-folder suffix of each :data:`agegender.views.VIEW_SETS` entry ('' for the default)."""
VIEW_SET_TITLES = {"validated": "", "alternate": ", two alternate scale views", "mirror": ", flip TTA only", "scales": ", scale TTA only", "single": ", no TTA"}
"""What a report's title says of each view set (reports written before ``views`` was recorded say it only there)."""


def tta_variant(options: dict[str, Any]) -> str:
    """Report-name suffix of a TTA setting: '' for the default (mirror and scales)."""
    from agegender.views import view_set_name

    return VIEW_SET_SUFFIXES[view_set_name(options["flip_tta"], options["scale_tta"], options.get("outer_views"))]


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model, detector and age-group options of ``predict`` and ``batch`` (see :func:`build_estimator`)."""
    p.add_argument("--groups", default="fairface9",
                   help=f"age-group preset ({', '.join(PRESETS)}) or lower edges such as 0,13,18,65")
    p.add_argument("--detector", choices=("auto", "short", "full"), default="auto")
    p.add_argument("--min-score", type=float, default=0.5, help="minimum face detection score (0-1)")
    p.add_argument("--min-face-size", type=int, default=0, help="ignore faces smaller than this (pixels)")
    p.add_argument("--max-faces", type=int, default=None)
    p.add_argument("--model", default=None, help="backbone (default: the bundled default model)")
    p.add_argument("--weights", default=None, help="a .safetensors file instead of the bundled weights")
    p.add_argument("--untrained", action="store_true", help=argparse.SUPPRESS)  # tests only: random weights
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", choices=("auto", "onnx", "torch"), default="auto",
                   help="auto (default): onnxruntime where the model's ONNX graph is bundled, else torch")
    p.add_argument("--precision", choices=("auto", "float32", "int8"), default="auto",
                   help="auto (default): a bundled int8 graph only on a CPU with VNNI/AMX/Arm dotprod where a "
                        "start-up probe finds it faster, else float32")
    add_tta_arguments(p)


def estimator_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Estimator`` keyword arguments for the parsed model options (plain values: they travel to batch workers)."""
    return dict(model=args.model, detector=args.detector, device=args.device, groups=args.groups,
                weights=None if args.untrained else (args.weights or "bundled"), min_score=args.min_score,
                min_face_size=args.min_face_size, max_faces=args.max_faces,
                engine=getattr(args, "engine", "auto"), precision=getattr(args, "precision", "auto"),
                **tta_options(args))


def build_estimator(args: argparse.Namespace):
    from agegender.estimator import Estimator

    return Estimator(**estimator_options(args))


def expand_paths(paths: Iterable[str], recursive: bool = False) -> list[Path]:
    """Files as given; directories replaced by the images they contain (sorted). A directory without images
    stays in the list as itself, so :func:`iter_records` can give it a record saying so."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            out += found or [path]
        else:
            out.append(path)
    return out
