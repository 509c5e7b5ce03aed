"""``agegender check PATH... --min-age 18 [--buffer B] [--json]``: pass or ask for ID, per face.

For scripts and kiosks: exit code 0 if every face passes, 3 if any face needs ID (or an image shows no face:
nothing was verified), 1 if an image could not be read or the model could not be loaded (errors win over 3;
2 is argparse's bad usage). The decision is :meth:`agegender.Face.age_check`, the same as the app's age-check
page; ``--json`` prints one record per image like ``agegender predict --json``, each face with an ``age_check``.

By default every bundled model of the validated consensus (:mod:`agegender.assurance.consensus`) must pass, each under its
own buffer: the only setting that met the ≤ 1 % false-pass bar at t = 18 on validation. ``--single-model`` (or a
``--model`` / ``--weights`` of your own) checks with one model, 5-6 times faster (benchmarks/bench_inference.py --sections consensus).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agegender.assurance.age_check import EXIT_ASK_FOR_ID, EXIT_PASS, default_buffer, summary
from agegender.cli.options import add_tta_arguments
from agegender.errors import AgeGenderError

EXIT_ERROR = 1


def _records(estimator: Any, files: list, threshold: int, buffer: int | None, crops: bool) -> list[dict[str, Any]]:
    from agegender.io.images import load_image

    records = []
    for path in files:
        record: dict[str, Any] = {"file": str(path), "width": None, "height": None, "faces": [], "error": None,
                                  "decision": None, "summary": None}
        try:
            rgb = load_image(path)
            record["height"], record["width"] = int(rgb.shape[0]), int(rgb.shape[1])
            faces = estimator.predict_crops([rgb]) if crops else estimator.predict(rgb, keep_crops=False)
        except AgeGenderError as exc:
            record["error"], record["decision"] = str(exc), "error"
            records.append(record)
            continue
        decisions = [f.age_check(threshold, buffer) for f in faces]
        record["faces"] = [{**f.to_dict(), "age_check": d.to_dict()} for f, d in zip(faces, decisions)]
        record["decision"] = "pass" if decisions and all(d.passed for d in decisions) else "ask_for_id"
        record["summary"] = summary(decisions) if decisions else "no face found: ask for ID"
        records.append(record)
    return records


def _print_text(records: list[dict[str, Any]], threshold: int, out) -> None:
    from agegender.assurance.age_check import whole_years as _y  # the reasons' rounding, so the text never says 48 beside "49"

    for rec in records:
        if rec["error"]:
            print(f"{rec['file']}: ERROR {rec['error']}", file=out)
            continue
        print(f"{rec['file']}: {rec['summary']}", file=out)
        for face in rec["faces"]:
            d = face["age_check"]
            word = "PASS" if d["passed"] else "ASK FOR ID"
            print(f"  #{face['index']} {word}: P(age ≥ {threshold}) {d['p_at_least']:.0%}, age {_y(d['age'])} "
                  f"(80 % interval {_y(d['age_low'])}-{_y(d['age_high'])}"
                  f"{'' if d['calibrated'] else ', uncalibrated'}): {d['reason']}", file=out)
            for o in d["opinions"]:
                print(f"      {o['model']}: {'pass' if o['passed'] else 'ask for ID'}, age {_y(o['age'])} "
                      f"({_y(o['age_low'])}-{_y(o['age_high'])}), buffer {o['buffer']}", file=out)


def _wants_consensus(args: argparse.Namespace) -> bool:
    from agegender.assurance.consensus import consensus_policy

    custom = args.model is not None or args.weights is not None or args.untrained
    return not (args.single_model or custom) and consensus_policy() is not None


def _build(args: argparse.Namespace) -> Any:
    from agegender.cli.options import build_estimator as _build_estimator
    from agegender.cli.options import tta_options
    from agegender.assurance.consensus import ConsensusEstimator

    if not _wants_consensus(args):
        return _build_estimator(args)
    return ConsensusEstimator(detector=args.detector, min_score=args.min_score, device=args.device,
                              **tta_options(args))


def _policy_line(estimator: Any, threshold: int, buffer: int | None) -> str:
    if hasattr(estimator, "describe_policy"):
        return f"policy: pass if {estimator.describe_policy(threshold, buffer)} (estimated age ≥ t + buffer) " \
               f"and every 80 % interval starts at ≥ {threshold}"
    if buffer is None:
        buffer = default_buffer(threshold, estimator.validated_buffers)
    return f"policy: pass if estimated age ≥ {threshold} + {buffer} and the 80 % interval starts at ≥ {threshold}"


def cmd_check(args: argparse.Namespace) -> int:
    from agegender.cli.options import expand_paths

    if args.buffer is not None and args.buffer < 0:
        print("agegender check: error: --buffer must be >= 0", file=sys.stderr)
        return EXIT_ERROR
    files = expand_paths(args.paths, args.recursive)
    if not files:
        print("agegender check: no image files found in the given paths", file=sys.stderr)
        return EXIT_ERROR
    try:
        estimator = _build(args)
    except (AgeGenderError, ValueError, RuntimeError) as exc:
        print(f"agegender check: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        records = _records(estimator, files, args.min_age, args.buffer, args.crops)
    finally:
        estimator.close()
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_policy_line(estimator, args.min_age, args.buffer))
        _print_text(records, args.min_age, sys.stdout)
    for rec in records:
        if rec["error"]:
            print(f"agegender check: {rec['error']}", file=sys.stderr)
    if any(r["error"] for r in records):
        return EXIT_ERROR
    return EXIT_PASS if all(r["decision"] == "pass" for r in records) else EXIT_ASK_FOR_ID


def register_cli(sub: Any) -> argparse.ArgumentParser:
    """Add ``check`` to the ``agegender`` CLI (``sub`` is its subparsers object)."""
    p = sub.add_parser("check", help="age check: pass or ask for ID for every face (exit 0 all pass, 3 any needs ID)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders of images")
    p.add_argument("--min-age", type=int, default=18, help="the age t to check (default 18)")
    p.add_argument("--buffer", type=int, default=None,
                   help="years above t the estimate must reach (default: the buffer validated for t; with "
                        "the consensus, the first model's, the others keep their validated difference)")
    p.add_argument("--single-model", action="store_true",
                   help="check with the default model alone (faster; did not meet the 1%% bar at t = 18)")
    p.add_argument("--json", action="store_true", help="print one JSON record per image")
    p.add_argument("--crops", action="store_true", help="each input is a face chip with one face")
    p.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    p.add_argument("--model", default=None, help="backbone (default: the bundled default model)")
    p.add_argument("--weights", default=None, help="a .safetensors file instead of the bundled weights")
    p.add_argument("--untrained", action="store_true", help=argparse.SUPPRESS)  # tests only: random weights
    p.add_argument("--detector", choices=("auto", "short", "full"), default="auto")
    p.add_argument("--min-score", type=float, default=0.5, help="minimum face detection score (0-1)")
    p.add_argument("--device", default="cpu")
    add_tta_arguments(p)
    p.set_defaults(func=cmd_check, groups="fairface9", min_face_size=0, max_faces=None)
    return p
