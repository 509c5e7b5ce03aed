"""``agegender`` command line: ``predict`` (one record per image), ``info`` and ``evaluate``.

A bad file is reported (once, on stderr, and in its record) and the batch goes on; the exit code is 1 if any file
failed, so scripts notice. Records are printed as each image finishes, so a later failure loses nothing; their
schema is :mod:`agegender.results`, shared with the app's downloads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from . import __version__
from .cli_options import add_tta_arguments, tta_options
from .errors import AgeGenderError
from .groups import PRESETS
from .results import CSV_COLUMNS, annotated_name, csv_rows, csv_writer, image_record, json_line

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
CSV_FIELDS = CSV_COLUMNS  # the one schema of agegender.results (the app's CSV download has the same columns)


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


def _build_estimator(args: argparse.Namespace):
    from .estimator import Estimator

    return Estimator(model=args.model, detector=args.detector, device=args.device, groups=args.groups,
                     weights=None if args.untrained else (args.weights or "bundled"), min_score=args.min_score,
                     min_face_size=args.min_face_size, max_faces=args.max_faces,
                     engine=getattr(args, "engine", "auto"), **tta_options(args))


def _named(error: str, path: Path) -> str:
    """The error with the file's name in it (some library messages, e.g. the size limit's, have none)."""
    return error if str(path) in error or path.name in error else f"{path}: {error}"


def iter_records(estimator, files: Sequence[Path], crops: bool = False, annotate_dir: Path | None = None,
                 show_labels: bool = True, include_age_probs: bool = False) -> Iterator[dict[str, Any]]:
    """One record (:func:`agegender.results.image_record`) per input, yielded as soon as it is done, so a
    caller can print it at once and a later failure loses nothing."""
    from .annotate import annotate
    from .imageio import load_image

    used: set[str] = set()
    for path in files:
        if path.is_dir():
            yield image_record(str(path), error=f"{path}: no image files in this directory "
                                                f"({', '.join(sorted(IMAGE_SUFFIXES))})")
            continue
        try:
            rgb = load_image(path)
            faces = estimator.predict_crops([rgb]) if crops else estimator.predict(rgb)
        except AgeGenderError as exc:
            yield image_record(str(path), error=_named(str(exc), path))
            continue
        record = image_record(str(path), faces, width=rgb.shape[1], height=rgb.shape[0],
                              include_age_probs=include_age_probs)
        if annotate_dir is not None:
            from PIL import Image

            out = annotate_dir / annotated_name(path, used)
            try:
                Image.fromarray(annotate(rgb, faces, show_labels=show_labels)).save(out, format="PNG")
            except (OSError, ValueError) as exc:
                record["error"] = f"{path}: could not write the annotated picture {out} ({exc})"
            else:
                record["annotated"] = str(out)
        yield record


def predict_records(estimator, files: list[Path], crops: bool, annotate_dir: Path | None,
                    show_labels: bool = True) -> list[dict[str, Any]]:
    """All records of :func:`iter_records` as a list."""
    return list(iter_records(estimator, files, crops, annotate_dir, show_labels))


def _print_text(rec: dict[str, Any], out) -> None:
    if rec["error"] and not rec["faces"]:
        return  # the error goes to stderr, once
    print(f"{rec['file']}: {len(rec['faces'])} face(s)", file=out)
    for f in rec["faces"]:
        print(f"  #{f['index']} box={f['box']} age {f['age']:.1f} ({f['age_low']:.0f}-{f['age_high']:.0f}) "
              f"group {f['age_group']} {f['gender']} ({f['gender_confidence']:.0%})", file=out)
    if rec.get("annotated"):
        print(f"  annotated: {rec['annotated']}", file=out)


def _check_annotate_dir(raw: str | None) -> Path | None:
    if not raw:
        return None
    path = Path(raw)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--annotate {raw}: this is a file, not a folder; give a folder for the annotated PNGs")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--annotate {raw}: cannot create this folder ({exc.strerror or exc})") from None
    return path


def cmd_predict(args: argparse.Namespace) -> int:
    files = expand_paths(args.paths, args.recursive)
    from .video_io import VIDEO_SUFFIXES

    if any(p.suffix.lower() in VIDEO_SUFFIXES for p in files):  # video files: per-track records
        from .cli_video import cmd_predict_videos

        return cmd_predict_videos(args, files, _build_estimator)
    try:
        annotate_dir = _check_annotate_dir(args.annotate)
        estimator = _build_estimator(args)
    except (AgeGenderError, ValueError) as exc:
        print(f"agegender: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    writer = csv_writer(out) if args.csv else None
    failed = written = 0
    first = True
    if args.json_array:
        out.write("[")
    try:
        for rec in iter_records(estimator, files, args.crops, annotate_dir, show_labels=not args.no_labels,
                                include_age_probs=args.age_probs):
            if args.json:
                out.write(json_line(rec) + "\n")
            elif args.json_array:
                out.write(("\n" if first else ",\n") + json.dumps(rec, indent=2))
            elif writer is not None:
                writer.writerows(csv_rows(rec))
            else:
                _print_text(rec, out)
            first = False
            out.flush()
            if rec["error"]:
                failed += 1
                print(f"agegender: {rec['error']}", file=sys.stderr, flush=True)
            written += bool(rec.get("annotated"))
    finally:
        if args.json_array:
            out.write("\n]\n")
            out.flush()
        estimator.close()
    if annotate_dir is not None:
        print(f"agegender: {written} annotated PNG{'s' if written != 1 else ''} written to {annotate_dir}",
              file=sys.stderr)
    return 1 if failed else 0


def _version_of(distribution: str) -> str | None:
    """An installed package's version from its metadata, without importing it (torch alone takes seconds)."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    from .engines import onnxruntime_available, torch_available
    from .paths import WEIGHTS_DIR
    from .weights import bundled_backbones, read_manifest

    versions = {name: _version_of(dist) for name, dist in (
        ("onnxruntime", "onnxruntime"), ("torch", "torch"), ("mediapipe", "mediapipe"),
        ("opencv", "opencv-contrib-python") if _version_of("opencv-contrib-python") else ("opencv", "opencv-python-headless"),
        ("numpy", "numpy"))}
    info: dict[str, Any] = {
        "agegender": __version__, "python": platform.python_version(), **versions,
        "engines": [e for e, ok in (("onnx", onnxruntime_available()), ("torch", torch_available())) if ok],
        "presets": list(PRESETS), "weights_dir": str(WEIGHTS_DIR),
    }
    try:
        manifest = read_manifest()
        info["default_model"] = manifest.get("default_model")
        info["models"] = bundled_backbones()
        info["weights"] = {name: {k: e.get(k) for k in ("kind", "backbone", "detector", "precision", "bytes", "sha256")
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
    fmt.add_argument("--json", action="store_true",
                     help="JSON Lines: one JSON record per image, printed as soon as the image is done")
    fmt.add_argument("--json-array", action="store_true", help="one JSON list of all records (indented)")
    fmt.add_argument("--csv", action="store_true", help="one CSV row per face (columns as the app's CSV)")
    p.add_argument("--age-probs", action="store_true",
                   help="with --json/--json-array: add each face's 101-bin age distribution (age_probs)")
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
    p.add_argument("--engine", choices=("auto", "onnx", "torch"), default="auto",
                   help="auto (default): onnxruntime where the model's ONNX graph is bundled, else torch")
    add_tta_arguments(p)
    from .cli_video import add_video_arguments  # light: PyAV is imported only when a video is read

    add_video_arguments(p)
    p.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    p.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="versions, bundled weights and their hashes")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    from .cli_check import register_cli as register_check

    register_check(sub)

    try:
        from .evaluation.cli_args import register_cli
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
