"""Run an :class:`~agegender.Estimator` over labelled images in one of :data:`MODES` (:func:`evaluate`).

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
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from agegender.crops.chips import CHIP_FRAMINGS, ChipFraming, main_face
from agegender.io.images import load_image
from agegender.evaluation.degrade import degrade
from agegender.evaluation.metrics import ADULT_AGE, DEFAULT_PRESETS, NothingToEvaluate, _num, compute_metrics
from agegender.evaluation.pasting import match_box, pasted_canvas
from agegender.evaluation.samples import Labelled, subset

if TYPE_CHECKING:
    from agegender.estimator import Estimator
    from agegender.face import Face

MODES = ("crops", "photos", "pasted")


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


def _load(sample: Labelled, mode: str, degrade_seed: int | None) -> np.ndarray:
    rgb = load_image(sample.path())
    return rgb if degrade_seed is None else degrade(rgb, degrade_seed, Path(sample.file).name, mode)


def _run_crops(estimator: Estimator, items: list[Labelled], batch_size: int, track: _Tracker,
               framing: ChipFraming, degrade_seed: int | None = None) -> list[dict]:
    rows: list[dict] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        images = [_load(s, "crops", degrade_seed) for s in batch]
        faces = track.timed(estimator.predict_crops, images, framing=framing)
        rows += [_row(s, f, chip_framing="detected" if framing == "detect" and f.score > 0 else "template")
                 for s, f in zip(batch, faces)]
        track.done(len(rows))
    return rows


def _run_photos(estimator: Estimator, items: list[Labelled], track: _Tracker,
                degrade_seed: int | None = None) -> list[dict]:
    rows: list[dict] = []
    for sample in items:
        rgb = _load(sample, "photos", degrade_seed)
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
    degrade_seed: int | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``estimator`` over labelled ``samples`` in one of :data:`MODES`; returns (metrics, predictions).

    ``limit`` evaluates a seeded random subset. ``metrics["run"]`` records the mode, how many images had a
    (matching) face, time per image and the estimator; the accuracy metrics cover the found faces only.
    Each prediction is a JSON-safe dict (file, labels, ``detected``, ``pred_age``, ``p_female``, ``p_adult``…).
    ``chip_framing`` is how ``crops`` frames each chip (:func:`agegender.crops.chips.frame_chip`).
    ``degrade_seed``: every image is first replaced by its degraded copy (:mod:`agegender.evaluation.degrade`).
    """
    if degrade_seed is not None and mode == "pasted":
        raise ValueError("--degrade works on crops and photos (the pasted canvases are generated)")
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
        rows = _run_crops(estimator, items, batch_size, track, chip_framing, degrade_seed)
    elif mode == "photos":
        rows = _run_photos(estimator, items, track, degrade_seed)
    else:
        rows = _run_pasted(estimator, items, samples, seed, track)
    metrics = metrics_from_rows(rows, presets)
    metrics["run"] = run_info(mode, rows, track.busy, time.perf_counter() - track.start, seed, estimator.info())
    metrics["run"]["degrade_seed"] = degrade_seed
    if mode == "crops":
        metrics["run"]["chip_framing"] = chip_framing
        metrics["run"]["template_fallbacks"] = sum(r["chip_framing"] == "template" for r in rows) \
            if chip_framing == "detect" else None
    if not keep_age_probs:
        for row in rows:
            row.pop("age_probs", None)
    return metrics, rows

