"""``agegender predict``: one record per image (or, for video files, per video: :mod:`.video`).

A bad file is reported (once, on stderr, and in its record) and the batch goes on; the exit code is 1 if any file
failed, so scripts notice. Records are printed as each image finishes, so a later failure loses nothing; their
schema is :mod:`agegender.results`, shared with the app's downloads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from agegender.cli.options import IMAGE_SUFFIXES, add_model_arguments, build_estimator, expand_paths
from agegender.errors import AgeGenderError
from agegender.results import CSV_COLUMNS, annotated_name, csv_rows, csv_writer, image_record, json_line

CSV_FIELDS = CSV_COLUMNS  # the one schema of agegender.results (the app's CSV download has the same columns)


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="find faces and estimate age and gender for images or folders")
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
    add_model_arguments(p)
    from agegender.cli.video import add_video_arguments  # light: PyAV is imported only when a video is read

    add_video_arguments(p)
    p.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    p.set_defaults(func=cmd_predict)
    return p


def _named(error: str, path: Path) -> str:
    """The error with the file's name in it (some library messages, e.g. the size limit's, have none)."""
    return error if str(path) in error or path.name in error else f"{path}: {error}"


def iter_records(estimator, files: Sequence[Path], crops: bool = False, annotate_dir: Path | None = None,
                 show_labels: bool = True, include_age_probs: bool = False) -> Iterator[dict[str, Any]]:
    """One record (:func:`agegender.results.image_record`) per input, yielded as soon as it is done, so a
    caller can print it at once and a later failure loses nothing."""
    from agegender.annotate import annotate
    from agegender.io.images import load_image

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
    from agegender.io.video import VIDEO_SUFFIXES

    if any(p.suffix.lower() in VIDEO_SUFFIXES for p in files):  # video files: per-track records
        from agegender.cli.video import cmd_predict_videos

        return cmd_predict_videos(args, files, build_estimator)
    try:
        annotate_dir = _check_annotate_dir(args.annotate)
        estimator = build_estimator(args)
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
