"""``agegender predict clip.mp4``: video files on the command line, one record per person (track) in each video.

``cli.cmd_predict`` hands over when its inputs are videos; the estimator options are the image command's. Output
follows the image command's three forms: a readable table (default), ``--json`` (JSON Lines: one record per
video, with its tracks) and ``--csv`` (one row per track). ``--annotate DIR`` writes ``<name>.annotated.mp4``
there and says where; nothing else touches the disk.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Callable

from agegender.errors import AgeGenderError
from agegender.video.analysis import VIDEO_SUFFIXES, VideoLimits, analyse_video

TRACK_FIELDS = ["file", "track", "age", "age_low", "age_high", "gender", "p_female", "gender_confidence",
                "first_seen_s", "last_seen_s", "frames", "error"]


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that only apply to video inputs of ``agegender predict``."""
    group = parser.add_argument_group("video files (" + ", ".join(VIDEO_SUFFIXES) + ")")
    group.add_argument("--every", type=int, default=5, metavar="K",
                       help="analyse every K-th frame (default 5); boxes follow the tracks in between")
    group.add_argument("--min-track-frames", type=int, default=2, metavar="N",
                       help="list only tracks seen in at least N analysed frames (default 2: a face seen once is "
                            "usually a false detection; 1 lists all)")
    group.add_argument("--max-duration", type=float, default=3600.0, metavar="S",
                       help="refuse videos longer than S seconds (default 3600)")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def video_record(estimator: Any, path: Path, every: int, limits: VideoLimits, annotate_dir: Path | None,
                 show_labels: bool = True, progress: Callable[[float, int, int], None] | None = None,
                 min_track_frames: int = 2) -> dict[str, Any]:
    """One JSON-safe record for a video: its size, frame counts and tracks (those seen in at least
    ``min_track_frames`` analysed frames; ``brief_tracks`` counts the others), or the error that stopped it."""
    record: dict[str, Any] = {"file": str(path), "width": None, "height": None, "fps": None, "duration_s": None,
                              "frames": 0, "frames_analysed": 0, "every": every, "tracks": [], "brief_tracks": 0,
                              "error": None}
    try:
        result = analyse_video(path, estimator, every=every, limits=limits, annotate=annotate_dir is not None,
                               show_labels=show_labels, progress=progress)
    except AgeGenderError as exc:
        record["error"] = str(exc)
        return record
    record.update(width=result.info.width, height=result.info.height, fps=round(result.info.fps, 3),
                  duration_s=None if result.info.duration_s is None else round(result.info.duration_s, 3),
                  frames=result.frames, frames_analysed=result.frames_analysed,
                  tracks=[t.to_dict() for t in result.people(min_track_frames)],
                  brief_tracks=len(result.tracks) - len(result.people(min_track_frames)))
    if annotate_dir is not None and result.annotated is not None:
        annotate_dir.mkdir(parents=True, exist_ok=True)
        out = annotate_dir / f"{path.stem}.annotated.mp4"
        out.write_bytes(result.annotated)
        record["annotated"] = str(out)
    return record


def _stderr_progress(name: str) -> Callable[[float, int, int], None] | None:
    """A one-line progress display on a terminal's stderr (none when stderr is a file or a pipe)."""
    if not sys.stderr.isatty():
        return None

    def show(fraction: float, frames: int, analysed: int) -> None:
        end = "\n" if fraction >= 1.0 else ""
        print(f"\r{name}: {fraction:4.0%} ({frames} frames, {analysed} analysed)", end=end, file=sys.stderr,
              flush=True)
    return show


def _print_table(records: list[dict[str, Any]], out) -> None:
    for rec in records:
        if rec["error"]:
            continue  # reported once, on stderr
        brief = f"; {rec['brief_tracks']} brief track(s) not listed" if rec["brief_tracks"] else ""
        print(f"{rec['file']}: {len(rec['tracks'])} track(s) in {rec['frames']} frames "
              f"({rec['frames_analysed']} analysed, every {rec['every']}{brief})", file=out)
        for t in rec["tracks"]:
            print(f"  #{t['track']} age {t['age']:.1f} ({t['age_low']:.0f}-{t['age_high']:.0f}) {t['gender']} "
                  f"({t['gender_confidence']:.0%}) seen {t['first_seen_s']:.1f}-{t['last_seen_s']:.1f} s "
                  f"in {t['frames']} frame(s)", file=out)
        if rec.get("annotated"):
            print(f"  annotated video: {rec['annotated']}", file=out)


def _write_csv(records: list[dict[str, Any]], out) -> None:
    writer = csv.DictWriter(out, fieldnames=TRACK_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for rec in records:
        if rec["error"] or not rec["tracks"]:
            writer.writerow({"file": rec["file"], "error": rec["error"] or "no face found"})
        for t in rec["tracks"]:
            writer.writerow({"file": rec["file"], **t, "error": ""})


def cmd_predict_videos(args: argparse.Namespace, files: list[Path], build_estimator: Callable[[argparse.Namespace], Any]) -> int:
    """``agegender predict`` for video files (``files`` all videos); exit code as for images."""
    images = [p for p in files if not is_video(p)]
    if images:
        print(f"agegender: give videos and images in separate calls ({images[0]} is not a video)", file=sys.stderr)
        return 2
    if args.every < 1:
        print("agegender: --every must be at least 1", file=sys.stderr)
        return 2
    try:
        estimator = build_estimator(args)
    except (AgeGenderError, ValueError) as exc:
        print(f"agegender: {exc}", file=sys.stderr)
        return 2
    limits = VideoLimits(max_bytes=VideoLimits.max_bytes * 10, max_duration_s=args.max_duration)
    annotate_dir = Path(args.annotate) if args.annotate else None
    records = []
    try:
        for path in files:
            rec = video_record(estimator, path, args.every, limits, annotate_dir, show_labels=not args.no_labels,
                               progress=_stderr_progress(path.name), min_track_frames=args.min_track_frames)
            records.append(rec)
            if args.json:  # JSON Lines, written as each video finishes
                sys.stdout.write(json.dumps(rec) + "\n")
                sys.stdout.flush()
    finally:
        estimator.close()
    if args.csv:
        _write_csv(records, sys.stdout)
    elif not args.json:
        _print_table(records, sys.stdout)
    failed = [r for r in records if r["error"]]
    for rec in failed:
        print(f"agegender: {rec['error']}", file=sys.stderr)
    return 1 if failed else 0


__all__ = ["TRACK_FIELDS", "add_video_arguments", "cmd_predict_videos", "is_video", "video_record"]
