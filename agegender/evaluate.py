"""Measure an :class:`~agegender.Estimator` on labelled faces, and the ``agegender evaluate`` command.

Three ways to feed the same labelled images, because they answer different questions:

* ``crops``  – face chips (UTKFace) through ``predict_crops``: each chip framed as the training crops were (its
  face detected on a copy with a replicated border; ``chip_framing="template"``: the fixed chip template),
  then the model. What the model does on the faces it was trained to see.
* ``photos`` – each image through the full app pipeline ``predict(image)``, taking its main face: what a user
  gets on a portrait photo (All-Age-Faces). Images with no detected face are misses, reported as a detection
  rate; the accuracy metrics then cover the detected faces only.
* ``pasted`` – each chip pasted into a larger photo-like canvas (see :func:`paste_chip`) and run through
  detect → crop → predict, taking the face that overlaps the pasted chip. The gap between ``crops`` and
  ``pasted`` is what detection and re-cropping cost in the app.

:func:`compute_metrics` is pure numpy on arrays, so other models (the peer benchmark) are scored identically.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import cv2
import numpy as np

from .chips import CHIP_FRAMINGS, CHIP_SIZE, ChipFraming, main_face
from .cli_options import add_tta_arguments, tta_options, tta_variant
from .crop import chip_detection
from .datasets import SETS, parse_utkface_name, read_split
from .detection import box_iou
from .groups import NUM_AGE_BINS, expected_age, get_preset, p_at_least
from .imageio import load_image
from .paths import data_root
from .reporting import summary_markdown, write_predictions, write_report

if TYPE_CHECKING:
    from .estimator import Estimator
    from .face import Face

__all__ = [
    "DEFAULT_PRESETS", "LabelledImage", "MODES", "NothingToEvaluate", "compute_metrics", "evaluate",
    "match_box", "metrics_from_rows", "paste_chip", "pasted_canvas", "register_cli", "run_cli", "run_info",
    "subset", "write_report",
]

DEFAULT_PRESETS = ("fairface9", "life4", "bins10", "adience8")
MODES = ("crops", "photos", "pasted")
ADULT_AGE = 18
CALIBRATION_BINS = 10
RACE_NAMES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Other", -1: "unknown"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

PASTE_SCALE = 2.5  # canvas side / chip side
PASTE_BLUR = 0.03  # Gaussian sigma of the background, as a fraction of the canvas side
PASTE_FEATHER = 0.06  # width of the chip's blended edge, as a fraction of the chip side
MIN_INSIDE = 0.5  # share of a detection box that must lie on the pasted face for it to count as that face


class NothingToEvaluate(ValueError):
    """No labelled image could be evaluated (none given, or no face found in any of them)."""


class Labelled(Protocol):
    """What :func:`evaluate` needs of a sample: :class:`agegender.datasets.Sample` and :class:`LabelledImage`."""

    file: str
    age: int
    gender: int
    race: int

    def path(self) -> Path: ...


@dataclass(frozen=True)
class LabelledImage:
    """A labelled image anywhere on disk (a user's folder), as opposed to a dataset :class:`Sample`."""

    file: str
    age: int
    gender: int  # 0 male, 1 female
    location: Path
    race: int = -1

    def path(self) -> Path:
        return self.location


# ---------------------------------------------------------------------------------------------------- metrics
def _num(value: float | None, digits: int = 6) -> float | None:
    """A JSON-safe float: rounded, and ``None`` instead of NaN/inf (empty denominators)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _rate(hits: int, total: int) -> float | None:
    return _num(hits / total) if total else None


def _age_errors(err: np.ndarray) -> dict[str, float | None]:
    abs_err = np.abs(err)
    return {
        "mae": _num(abs_err.mean()),
        "rmse": _num(math.sqrt(float((err ** 2).mean()))),
        "bias": _num(err.mean()),  # mean(predicted - true): < 0 means ages are underestimated
        "within_2": _num((abs_err <= 2).mean()),
        "within_5": _num((abs_err <= 5).mean()),
    }


def _slice(err: np.ndarray, gender_ok: np.ndarray) -> dict[str, Any]:
    errors = _age_errors(err)
    return {"n": int(len(err)), "mae": errors["mae"], "bias": errors["bias"], "within_5": errors["within_5"],
            "gender_accuracy": _num(gender_ok.mean())}


def _slices(keys: np.ndarray, names: dict[int, str], err: np.ndarray, gender_ok: np.ndarray) -> dict[str, Any]:
    """Per-slice errors in the order of ``names``; slices without samples are left out."""
    return {name: _slice(err[keys == key], gender_ok[keys == key]) for key, name in names.items()
            if np.any(keys == key)}


def _over_18(true_age: np.ndarray, p_adult: np.ndarray) -> dict[str, Any]:
    adult, said_adult = true_age >= ADULT_AGE, p_adult >= 0.5
    minors, adults = int((~adult).sum()), int(adult.sum())
    false_adults, false_minors = int((said_adult & ~adult).sum()), int((~said_adult & adult).sum())
    return {
        "accuracy": _num((said_adult == adult).mean()),
        "false_adult_rate": _rate(false_adults, minors),
        "false_minor_rate": _rate(false_minors, adults),
        "minors": minors, "adults": adults, "false_adults": false_adults, "false_minors": false_minors,
    }


def _groups(true_age: np.ndarray, age_probs: np.ndarray, preset_name: str) -> dict[str, Any]:
    preset = get_preset(preset_name)
    predicted = (age_probs @ preset.matrix).argmax(axis=1)
    true = np.asarray(preset.bins)[np.clip(true_age, 0, NUM_AGE_BINS - 1)]
    confusion = np.zeros((len(preset.labels), len(preset.labels)), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    return {
        "labels": list(preset.labels),
        "accuracy": _num((predicted == true).mean()),
        "one_off_accuracy": _num((np.abs(predicted - true) <= 1).mean()),
        "confusion": confusion.tolist(),  # rows: true group, columns: predicted group
    }


def _calibration(p: np.ndarray, outcome: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Expected calibration error over equal-width bins of ``p``, with the reliability table behind it."""
    index = np.minimum((np.clip(p, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        mean_p = float(p[inside].mean()) if count else None
        observed = float(outcome[inside].mean()) if count else None
        if count:
            ece += count / len(p) * abs(mean_p - observed)
        table.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "lo": _num(b / bins), "hi": _num((b + 1) / bins),
                      "mean_predicted": _num(mean_p), "observed": _num(observed), "count": count})
    return {"target": f"P(age >= {ADULT_AGE})", "ece": _num(ece), "bins": table}


def compute_metrics(
    true_age: Sequence[int] | np.ndarray,
    true_gender: Sequence[int] | np.ndarray,
    age_probs: np.ndarray,
    p_female: Sequence[float] | np.ndarray,
    race: Sequence[int] | np.ndarray | None = None,
    presets: Sequence[str] = DEFAULT_PRESETS,
) -> dict[str, Any]:
    """Every accuracy number of a report, from labels and the model's raw outputs.

    ``age_probs`` is (N, 101); the point age is its expectation and "adult" means P(age ≥ 18) ≥ 0.5, exactly
    as the app decides. True ages above 100 are kept as labelled (the model cannot say more than 100, and that
    error is real); for age groups they fall into the oldest group. ``gender`` is 0 male / 1 female, ``race``
    UTKFace's 0-4 or -1 (the race slices are left out when no race is known). The result holds plain ints,
    floats, lists and ``None`` (never NaN), so it goes straight into JSON.
    """
    age = np.asarray(true_age, dtype=np.int64).reshape(-1)
    gender = np.asarray(true_gender, dtype=np.int64).reshape(-1)
    probs = np.asarray(age_probs, dtype=np.float64)
    p_fem = np.asarray(p_female, dtype=np.float64).reshape(-1)
    n = len(age)
    if n == 0:
        raise NothingToEvaluate("no predictions to score")
    races = np.full(n, -1, dtype=np.int64) if race is None else np.asarray(race, dtype=np.int64).reshape(-1)
    if probs.shape != (n, NUM_AGE_BINS) or gender.shape != (n,) or p_fem.shape != (n,) or races.shape != (n,):
        raise ValueError(f"shapes disagree: {n} ages, {gender.shape} genders, {probs.shape} age_probs "
                         f"(expected ({n}, {NUM_AGE_BINS})), {p_fem.shape} p_female, {races.shape} races")
    err = np.asarray(expected_age(probs)).reshape(-1) - age
    p_adult = np.asarray(p_at_least(probs, ADULT_AGE)).reshape(-1)
    gender_ok = (p_fem >= 0.5).astype(np.int64) == gender
    decades = np.minimum(age // 10, 9)
    slices = {
        "decade": _slices(decades, {d: f"{10 * d}-{10 * d + 9}" if d < 9 else "90+" for d in range(10)},
                          err, gender_ok),
        "gender": _slices(gender, {0: "male", 1: "female"}, err, gender_ok),
    }
    if np.any(races >= 0):
        slices["race"] = _slices(races, {k: RACE_NAMES[k] for k in (0, 1, 2, 3, 4, -1)}, err, gender_ok)
    return {
        "n": int(n),
        **_age_errors(err),
        "over_18": _over_18(age, p_adult),
        "gender_accuracy": _num(gender_ok.mean()),
        "groups": {name: _groups(age, probs, name) for name in presets},
        "calibration": _calibration(p_adult, (age >= ADULT_AGE).astype(np.float64)),
        "slices": slices,
    }


# ---------------------------------------------------------------------------------------------------- pasting
def paste_chip(chip: np.ndarray, background: np.ndarray, rng: np.random.Generator,
               scale: float = PASTE_SCALE) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Place a face chip in a photo-like canvas; returns (canvas, where the chip's face is).

    The background is another image turned upside down, stretched to the canvas and strongly blurred: real
    photo colours and texture, but no upright face the detector could confuse with the chip. The chip (resized
    to 200 px) goes to a random position with a feathered edge, so no hard seam frames the face. The returned
    box is where BlazeFace's full-range model puts a face on a chip (the crop calibration), moved to the canvas.
    """
    chip = load_image(chip)
    if chip.shape[:2] != (CHIP_SIZE, CHIP_SIZE):
        chip = cv2.resize(chip, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_AREA)
    side = int(round(CHIP_SIZE * scale))
    canvas = cv2.resize(np.ascontiguousarray(load_image(background)[::-1, ::-1]), (side, side),
                        interpolation=cv2.INTER_LINEAR)
    canvas = cv2.GaussianBlur(canvas, (0, 0), sigmaX=side * PASTE_BLUR).astype(np.float32)
    x, y = (int(v) for v in rng.integers(0, side - CHIP_SIZE + 1, size=2))
    ramp = np.minimum(np.arange(CHIP_SIZE) + 0.5, CHIP_SIZE - np.arange(CHIP_SIZE) - 0.5) / (PASTE_FEATHER * CHIP_SIZE)
    ramp = np.clip(ramp, 0.0, 1.0)
    alpha = np.minimum.outer(ramp, ramp)[..., None]
    region = canvas[y:y + CHIP_SIZE, x:x + CHIP_SIZE]
    canvas[y:y + CHIP_SIZE, x:x + CHIP_SIZE] = alpha * chip + (1.0 - alpha) * region
    x1, y1, x2, y2 = chip_detection(CHIP_SIZE).box
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), (x1 + x, y1 + y, x2 + x, y2 + y)


def pasted_canvas(sample: Labelled, pool: Sequence[Labelled], seed: int = 0
                  ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The canvas of ``sample`` for ``pasted`` evaluation: background image from ``pool`` and position drawn
    from a random state that depends only on the seed and the file name, so a ``--limit`` subset, a rerun or
    the peer benchmark see exactly the same canvases."""
    rng = np.random.default_rng([seed, zlib.crc32(sample.file.encode())])
    background = pool[int(rng.integers(len(pool)))]
    return paste_chip(load_image(sample.path()), load_image(background.path()), rng)


def match_box(boxes: Sequence[Sequence[float]], target: Sequence[float]) -> tuple[int | None, float]:
    """Index of the box that is the pasted face (None if none is) and its IoU with ``target``.

    A box counts when at least :data:`MIN_INSIDE` of it lies within ``target``; among those the one with the
    highest IoU wins. Plain IoU would be unfair to detectors with tighter boxes than BlazeFace's (dlib's HOG),
    and the "inside" test rejects a box around the (blurred) background instead of the chip.
    """
    if len(boxes) == 0:
        return None, 0.0
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    t = np.asarray(target, dtype=np.float64)
    iw = np.clip(np.minimum(b[:, 2], t[2]) - np.maximum(b[:, 0], t[0]), 0, None)
    ih = np.clip(np.minimum(b[:, 3], t[3]) - np.maximum(b[:, 1], t[1]), 0, None)
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-9)
    iou = box_iou(b, t[None])[:, 0]
    score = np.where(iw * ih / area >= MIN_INSIDE, iou, -1.0)
    best = int(score.argmax())
    return (best if score[best] > 0 else None), float(iou[best] if score[best] > 0 else iou.max())


# ---------------------------------------------------------------------------------------------------- running
def subset(samples: Sequence[Labelled], limit: int | None, seed: int) -> list[Labelled]:
    """``limit`` samples drawn with a fixed seed: split lists are sorted by name, i.e. by age for UTKFace."""
    items = list(samples)
    if limit is None or limit >= len(items):
        return items
    picked = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in picked]


def _row(sample: Labelled, face: Face | None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"file": sample.file, "age": int(sample.age), "gender": int(sample.gender),
                           "race": int(sample.race), "detected": face is not None}
    if face is not None:
        row.update(pred_age=round(face.age, 3), p_female=round(face.p_female, 5),
                   p_adult=round(face.p_at_least(ADULT_AGE), 5), age_probs=face.age_probs)
    return {**row, **extra}


class _Tracker:
    """Times the estimator calls alone (not image decoding or pasting, so the peer benchmark can time its
    model the same way) and prints a progress line on stderr every few seconds."""

    def __init__(self, total: int, label: str, progress: bool, every_s: float = 10.0):
        self.total, self.label, self.progress, self.every_s = total, label, progress, every_s
        self.start = self.last = time.perf_counter()
        self.busy = 0.0

    def timed(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.busy += time.perf_counter() - t0

    def done(self, count: int) -> None:
        now = time.perf_counter()
        if self.progress and (count == self.total or now - self.last >= self.every_s):
            self.last = now
            print(f"  {self.label}: {count}/{self.total} images ({count / max(now - self.start, 1e-9):.1f}/s)",
                  file=sys.stderr, flush=True)


def _run_crops(estimator: Estimator, items: list[Labelled], batch_size: int, track: _Tracker,
               framing: ChipFraming) -> list[dict]:
    rows: list[dict] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        images = [load_image(s.path()) for s in batch]
        faces = track.timed(estimator.predict_crops, images, framing=framing)
        rows += [_row(s, f, chip_framing="detected" if framing == "detect" and f.score > 0 else "template")
                 for s, f in zip(batch, faces)]
        track.done(len(rows))
    return rows


def _run_photos(estimator: Estimator, items: list[Labelled], track: _Tracker) -> list[dict]:
    rows: list[dict] = []
    for sample in items:
        rgb = load_image(sample.path())
        faces = track.timed(estimator.predict, rgb, keep_crops=False)
        rows.append(_row(sample, main_face(faces, rgb.shape), faces_found=len(faces)))
        track.done(len(rows))
    return rows


def _run_pasted(estimator: Estimator, items: list[Labelled], pool: Sequence[Labelled], seed: int,
                track: _Tracker) -> list[dict]:
    rows: list[dict] = []
    for sample in items:
        canvas, face_box = pasted_canvas(sample, pool, seed)
        faces = track.timed(estimator.predict, canvas, keep_crops=False)
        index, iou = match_box([f.box for f in faces], face_box)
        rows.append(_row(sample, None if index is None else faces[index], faces_found=len(faces),
                         match_iou=round(iou, 4)))
        track.done(len(rows))
    return rows


def run_info(mode: str, rows: Sequence[dict], busy_s: float, wall_s: float, seed: int,
             estimator: dict[str, Any]) -> dict[str, Any]:
    """The ``run`` entry of a report: coverage (found faces) and speed. ``ms_per_image`` / ``ms_per_face``
    count only the time inside the model's calls (detection included where the mode detects)."""
    found = sum(1 for r in rows if r["detected"])
    return {
        "mode": mode, "images": len(rows), "faces_found": found, "missed": len(rows) - found,
        "detection_rate": _num(found / len(rows)) if rows else None, "model_seconds": _num(busy_s, 3),
        "wall_seconds": _num(wall_s, 3), "ms_per_image": _num(1000.0 * busy_s / len(rows), 2) if rows else None,
        "ms_per_face": _num(1000.0 * busy_s / found, 2) if found else None, "seed": seed, "estimator": estimator,
    }


def metrics_from_rows(rows: Sequence[dict], presets: Sequence[str] = DEFAULT_PRESETS) -> dict[str, Any]:
    """:func:`compute_metrics` over the rows whose face was found (rows carry ``age_probs`` arrays)."""
    found = [r for r in rows if r["detected"]]
    if not found:
        raise NothingToEvaluate(f"no face was found in any of the {len(rows)} images")
    return compute_metrics([r["age"] for r in found], [r["gender"] for r in found],
                           np.stack([r["age_probs"] for r in found]), [r["p_female"] for r in found],
                           [r["race"] for r in found], presets)


def evaluate(
    estimator: Estimator,
    samples: Sequence[Labelled],
    mode: str = "crops",
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = True,
    seed: int = 0,
    presets: Sequence[str] = DEFAULT_PRESETS,
    chip_framing: ChipFraming = "detect",
    keep_age_probs: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``estimator`` over labelled ``samples`` in one of :data:`MODES`; returns (metrics, predictions).

    ``limit`` evaluates a seeded random subset. ``metrics["run"]`` records the mode, how many images had a
    (matching) face, time per image and the estimator; the accuracy metrics cover the found faces only.
    Each prediction is a JSON-safe dict (file, labels, ``detected``, ``pred_age``, ``p_female``, ``p_adult``…).
    ``chip_framing`` is how ``crops`` frames each chip (:func:`agegender.chips.frame_chip`).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if chip_framing not in CHIP_FRAMINGS:
        raise ValueError(f"chip_framing must be one of {CHIP_FRAMINGS}, not {chip_framing!r}")
    items = subset(samples, limit, seed)
    if not items:
        raise NothingToEvaluate("no labelled images to evaluate")
    # One untimed call first: MediaPipe and torch set up lazily, a one-off cost that is not per image.
    first = load_image(items[0].path())
    if mode == "crops":
        estimator.predict_crops([first], framing=chip_framing)
    else:
        estimator.predict(first)
    track = _Tracker(len(items), mode, progress)
    if mode == "crops":
        rows = _run_crops(estimator, items, batch_size, track, chip_framing)
    elif mode == "photos":
        rows = _run_photos(estimator, items, track)
    else:
        rows = _run_pasted(estimator, items, samples, seed, track)
    metrics = metrics_from_rows(rows, presets)
    metrics["run"] = run_info(mode, rows, track.busy, time.perf_counter() - track.start, seed, estimator.info())
    if mode == "crops":
        metrics["run"]["chip_framing"] = chip_framing
        metrics["run"]["template_fallbacks"] = sum(r["chip_framing"] == "template" for r in rows) \
            if chip_framing == "detect" else None
    if not keep_age_probs:
        for row in rows:
            row.pop("age_probs", None)
    return metrics, rows


# ---------------------------------------------------------------------------------------------------- CLI
def _parse_gender(value: str) -> int:
    table = {"0": 0, "1": 1, "m": 0, "male": 0, "man": 0, "f": 1, "female": 1, "woman": 1}
    key = value.strip().lower()
    if key not in table:
        raise ValueError(f"gender {value!r} is not 0/1 or male/female")
    return table[key]


def _parse_race(value: str | None) -> int:
    if value is None or not value.strip():
        return -1
    by_name = {name.lower(): key for key, name in RACE_NAMES.items()}
    key = value.strip().lower()
    if key in by_name:
        return by_name[key]
    race = int(key)
    if race not in RACE_NAMES:
        raise ValueError(f"race {value!r} is not one of 0-4, -1 or {', '.join(RACE_NAMES.values())}")
    return race


def read_labels_csv(csv_path: Path, folders: Sequence[Path]) -> tuple[list[LabelledImage], int]:
    """Rows ``file, age, gender[, race]`` of a CSV, each file looked up in ``folders`` (first hit wins) or next
    to the CSV when no folder is given; plus how many listed files were not found. Raises ValueError naming
    the first bad row."""
    folders = list(folders) or [csv_path.parent]
    out: list[LabelledImage] = []
    missing_files = 0
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "age", "gender"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                age, gender, race = int(row["age"]), _parse_gender(row["gender"]), _parse_race(row.get("race"))
                if not 0 <= age <= 120:
                    raise ValueError(f"age {age} is outside 0-120")
            except ValueError as exc:
                raise ValueError(f"{csv_path}:{line}: {exc}") from None
            found = next((f / row["file"] for f in folders if (f / row["file"]).is_file()), None)
            if found is None:
                missing_files += 1
            else:
                out.append(LabelledImage(row["file"], age, gender, found, race))
    return out, missing_files


def labelled_folder_images(paths: Sequence[Path]) -> tuple[list[LabelledImage], int]:
    """Images in ``paths`` (folders, not recursive, or files) labelled by UTKFace-style names, plus how many
    images were skipped because their name carries no label."""
    files: list[Path] = []
    for p in paths:
        files += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
    out = []
    for f in files:
        s = parse_utkface_name(f.name)
        if s is not None:
            out.append(LabelledImage(f.name, s.age, s.gender, f, s.race))
    return out, len(files) - len(out)


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
    from .errors import InvalidImageError, WeightsError
    from .estimator import Estimator

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
    tta = tta_options(args)
    try:
        estimator = Estimator(model=args.model, detector=args.detector, device=args.device,
                              weights=None if args.untrained else (args.weights or "bundled"), **tta)
    except (WeightsError, ValueError, RuntimeError) as exc:  # RuntimeError: a malformed --device
        print(f"agegender evaluate: error: {exc}", file=sys.stderr)
        return 2
    try:
        metrics, rows = evaluate(estimator, samples, mode=mode, batch_size=args.batch_size, limit=args.limit,
                                 seed=args.seed, chip_framing=args.chip_framing, keep_age_probs=args.age_probs)
    except (NothingToEvaluate, InvalidImageError) as exc:
        print(f"agegender evaluate: {exc}", file=sys.stderr)
        return 1
    finally:
        estimator.close()
    template = mode == "crops" and args.chip_framing == "template"
    variant = mode + ("-template" if template else "") + tta_variant(tta)
    out_dir = Path(args.out or f"reports/eval-{estimator.model_name}-{dataset}-{variant}")
    tta_words = {"-no-tta": ", no TTA", "-flip-tta": ", flip TTA only", "-scale-tta": ", scale TTA only"}
    title = (f"{estimator.model_name} on {dataset} ({mode}{', chip template' if template else ''}"
             f"{tta_words.get(tta_variant(tta), '')})")
    extra = {"dataset": dataset, "mode": mode}
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
    from .weights import read_manifest, write_manifest

    manifest = read_manifest()
    entry = manifest["files"][weights_file]
    headline = headline_metrics(metrics)
    headline["report"] = str(report_dir)
    entry.setdefault("metrics", {}).setdefault("test", {})[key] = headline
    write_manifest(manifest)


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
    p.add_argument("--limit", type=int, default=None, help="evaluate a seeded random subset of N images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="for --limit subsets and --pasted positions")
    p.add_argument("--out", default=None, help="report folder (default reports/eval-MODEL-DATASET-MODE)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the summary table")
    p.add_argument("--age-probs", action="store_true",
                   help="also write age_probs.npz: each found face's full 101-bin age distribution (for calibration)")
    p.add_argument("--record", action="store_true",
                   help="also store the headline metrics in weights/MANIFEST.json under metrics.test")
    p.set_defaults(func=run_cli)
    return p

