"""``agegender`` command line: ``predict`` (one record per image), ``info`` and ``evaluate``.

A bad file is reported and the batch goes on; the exit code is 1 if any file failed, so scripts notice.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Iterable

from . import __version__
from .cli_options import add_tta_arguments, tta_options
from .errors import AgeGenderError
from .groups import PRESETS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
CSV_FIELDS = ["file", "face", "x1", "y1", "x2", "y2", "score", "age", "age_low", "age_high", "age_group",
              "gender", "p_female", "p_adult", "error"]


def expand_paths(paths: Iterable[str], recursive: bool = False) -> list[Path]:
    """Files as given; directories replaced by the images they contain (sorted)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            out += sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(path)
    return out


def _build_estimator(args: argparse.Namespace):
    from .estimator import Estimator

    return Estimator(model=args.model, detector=args.detector, device=args.device, groups=args.groups,
                     weights=None if args.untrained else (args.weights or "bundled"), min_score=args.min_score,
                     min_face_size=args.min_face_size, max_faces=args.max_faces, **tta_options(args))


def predict_records(estimator, files: list[Path], crops: bool, annotate_dir: Path | None,
                    show_labels: bool = True) -> list[dict[str, Any]]:
    """One JSON-safe record per input file: its faces, or the error that stopped it."""
    from .annotate import annotate
    from .imageio import load_image

    records = []
    if annotate_dir:
        annotate_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        record: dict[str, Any] = {"file": str(path), "width": None, "height": None, "faces": [], "error": None}
        try:
            rgb = load_image(path)
            record["height"], record["width"] = int(rgb.shape[0]), int(rgb.shape[1])
            faces = estimator.predict_crops([rgb]) if crops else estimator.predict(rgb)
            record["faces"] = [f.to_dict() for f in faces]
            if annotate_dir is not None:
                import cv2

                out = annotate_dir / f"{path.stem}.annotated.png"
                drawn = annotate(rgb, faces, show_labels=show_labels)
                cv2.imwrite(str(out), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                record["annotated"] = str(out)
        except AgeGenderError as exc:
            record["error"] = str(exc)
        records.append(record)
    return records


def _print_table(records: list[dict[str, Any]], out) -> None:
    for rec in records:
        if rec["error"]:
            print(f"ERROR {rec['error']}", file=out)
            continue
        print(f"{rec['file']}: {len(rec['faces'])} face(s)", file=out)
        for f in rec["faces"]:
            print(f"  #{f['index']} box={f['box']} age {f['age']:.1f} ({f['age_low']:.0f}-{f['age_high']:.0f}) "
                  f"group {f['age_group']} {f['gender']} ({f['gender_confidence']:.0%})", file=out)


def _write_csv(records: list[dict[str, Any]], out) -> None:
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for rec in records:
        if rec["error"] or not rec["faces"]:
            writer.writerow({"file": rec["file"], "error": rec["error"] or "no face found"})
        for f in rec["faces"]:
            x1, y1, x2, y2 = f["box"]
            writer.writerow({"file": rec["file"], "face": f["index"], "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                             "score": f["score"], "age": f["age"], "age_low": f["age_low"], "age_high": f["age_high"],
                             "age_group": f["age_group"], "gender": f["gender"], "p_female": f["p_female"],
                             "p_adult": f["p_adult"], "error": ""})


def cmd_predict(args: argparse.Namespace) -> int:
    files = expand_paths(args.paths, args.recursive)
    if not files:
        print("agegender: no image files found in the given paths", file=sys.stderr)
        return 1
    try:
        estimator = _build_estimator(args)
    except (AgeGenderError, ValueError) as exc:
        print(f"agegender: {exc}", file=sys.stderr)
        return 2
    records = predict_records(estimator, files, args.crops, Path(args.annotate) if args.annotate else None,
                              show_labels=not args.no_labels)
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.csv:
        _write_csv(records, sys.stdout)
    else:
        _print_table(records, sys.stdout)
    failed = [r for r in records if r["error"]]
    for rec in failed:
        print(f"agegender: {rec['error']}", file=sys.stderr)
    return 1 if failed else 0


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    import cv2
    import mediapipe
    import numpy
    import torch

    from .models import list_backbones
    from .paths import WEIGHTS_DIR
    from .weights import read_manifest

    info: dict[str, Any] = {
        "agegender": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "mediapipe": mediapipe.__version__, "opencv": cv2.__version__, "numpy": numpy.__version__,
        "backbones": list_backbones(), "presets": list(PRESETS), "weights_dir": str(WEIGHTS_DIR),
    }
    try:
        manifest = read_manifest()
        info["default_model"] = manifest.get("default_model")
        info["weights"] = {name: {k: e.get(k) for k in ("kind", "backbone", "detector", "bytes", "sha256")
                                  if e.get(k) is not None} for name, e in manifest["files"].items()}
    except AgeGenderError as exc:
        info["weights_error"] = str(exc)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if key == "weights":
                print("weights:")
                for name, entry in value.items():
                    print(f"  {name}: {entry.get('kind')} {entry.get('backbone') or entry.get('detector')} "
                          f"{entry.get('bytes')} bytes sha256 {entry.get('sha256')}")
            else:
                print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agegender", description="Face detection with age and gender estimation.")
    parser.add_argument("--version", action="version", version=f"agegender {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="find faces and estimate age and gender for images or folders")
    p.add_argument("paths", nargs="+", help="image files and/or folders of images")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON record per image")
    fmt.add_argument("--csv", action="store_true", help="print one CSV row per face")
    p.add_argument("--annotate", metavar="OUT_DIR", help="write annotated PNGs (numbered boxes and labels) here")
    p.add_argument("--no-labels", action="store_true", help="with --annotate: numbers only, no age/gender text")
    p.add_argument("--crops", action="store_true", help="each input is a face chip with one face (like UTKFace): one result per "
                        "image, framed as the training crops")
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
    add_tta_arguments(p)
    p.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    p.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="versions, bundled weights and their hashes")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    from .cli_check import register_cli as register_check

    register_check(sub)

    try:
        from .evaluate import register_cli
    except ImportError:  # evaluation extras missing: predict and info still work
        pass
    else:
        register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
