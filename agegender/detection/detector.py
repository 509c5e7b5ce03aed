"""Face detection with MediaPipe's BlazeFace models (Tasks API), tuned for group photos.

BlazeFace looks at a 128 px (short range) or 192 px (full range) square copy of the whole frame, so a 40 px face
in a 2000 px group photo shrinks to ~4 px and is lost. We therefore run the full-range model on the whole image
*and* on overlapping tiles, drop tile detections cut by an inner tile edge (a neighbouring tile sees that face
whole) and merge everything with NMS. ``auto`` adds the short-range model, which is more reliable on big, near
faces (selfies, webcams).

A MediaPipe task runs one call at a time on one core, so each model has a pool of tasks, one per core
(:mod:`agegender.detection.blazeface`), and the passes over one image run side by side; the detections, their overlaps
and the keypoint check are :mod:`agegender.detection.boxes`.
"""

from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Literal

import cv2
import numpy as np

from agegender.detection.blazeface import TaskPool, _TaskDetector  # noqa: F401  (benchmarks time it)
from agegender.engines.threads import handoff_width, parallel_map
from agegender.errors import InvalidImageError
from agegender.detection.boxes import KEYPOINT_NAMES, Detection, box_iou, face_shaped, merge_detections  # noqa: F401
from agegender.io.limits import NATIVE_SIDE_LIMIT  # noqa: F401  (tests patch it here)
from agegender.paths import WEIGHTS_DIR

# glog/TF-style switches, read when mediapipe is imported (LiteRT's own loggers: agegender.detection.native_log).
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DetectorMode = Literal["auto", "short", "full"]
DETECTOR_MODES: tuple[str, ...] = ("auto", "short", "full")

MODEL_FILES = {"short": "face_detection_short_range.tflite", "full": "face_detection_full_range_sparse.tflite"}

PASS_MAX_SIDE = 4096
"""Longest side of any frame handed to MediaPipe; larger passes run on a downscaled copy (see FaceDetector._run)."""

MIN_TILE_SIDE = 24
"""Tiles thinner than this (edge slivers of very wide images) are skipped: no detectable face fits."""

PLAUSIBLE_SCORE = 0.6
"""Detections below this score must also have face-shaped keypoints (:func:`face_shaped`) to be kept."""

BORDER_PAD = 0.25
BORDER_CROP = 0.5
BORDER_MIN_SCORE = 0.5
BORDER_MIN_CUT = 0.2
BORDER_VIEW_SIDE = 512
"""The border pass (FaceDetector._border_faces) frames the image and its corner crops (BORDER_CROP of each side)
with BORDER_PAD × their longest side of grey, shrinks each padded view to BORDER_VIEW_SIDE px (the short-range model
sees 128 px) and keeps faces running past the border by BORDER_MIN_CUT of their size with at least BORDER_MIN_SCORE."""


def _flat(crop: np.ndarray) -> bool:
    """True for a tile with (almost) no texture, judged on every 8th pixel (~4,000 samples; a few µs)."""
    return float(crop[::8, ::8].std()) < 3.0


@dataclass(frozen=True)
class _Pass:
    """One MediaPipe call of a detection: which model looks at which view (whose top-left is at ``x0, y0`` of the
    image, framed by ``pad`` px of grey, downscaled to ``max_side``), and which of its detections to keep.
    ``label`` names the pass for ``benchmarks/bench_detector.py``."""

    model: str
    label: str
    view: np.ndarray = field(repr=False)
    x0: int = 0
    y0: int = 0
    pad: int = 0
    max_side: int = 0
    keep: Callable[[Detection], bool] | None = None


def _uncut_in_tile(x0: int, y0: int, x1: int, y1: int, w: int, h: int) -> Callable[[Detection], bool]:
    """A face cut by an inner tile edge is seen whole by the neighbouring tile (overlap), by the next pyramid level
    or by the global pass; a partial box would make an off-centre crop, so such detections are dropped."""
    margin = 2.0

    def keep(det: Detection) -> bool:
        bx1, by1, bx2, by2 = det.box
        cut = (x0 > 0 and bx1 <= x0 + margin) or (y0 > 0 and by1 <= y0 + margin) or (
            x1 < w and bx2 >= x1 - margin) or (y1 < h and by2 >= y1 - margin)
        return not cut

    return keep


def _tile_origins(length: int, tile: int, overlap: float) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1.0 - overlap)))
    origins = list(range(0, length - tile + 1, step))
    if origins[-1] + tile < length:
        origins.append(length - tile)
    return origins


class FaceDetector:
    """Finds faces with BlazeFace; ``detect(rgb)`` returns :class:`Detection` objects sorted left to right.

    Parameters
    ----------
    mode:
        ``"short"`` (faces within ~2 m: selfies, webcam), ``"full"`` (group photos, small and far faces, with
        tiling) or ``"auto"`` (both, merged).
    min_score:
        Minimum BlazeFace confidence. 0.5 is MediaPipe's default.
    min_face_size:
        Drop faces whose box side is smaller than this many pixels (too small to estimate an age from).
    max_faces:
        Keep at most this many faces, highest score first (``None``: all).
    tile_size, tile_overlap:
        Finest tiles of the full-range pass; used only when the image is larger than one tile.
    """

    SHORT_ONLY_MIN_SCORE = 0.75

    def __init__(
        self,
        mode: DetectorMode = "auto",
        min_score: float = 0.5,
        min_face_size: int = 0,
        max_faces: int | None = None,
        tile_size: int = 512,
        tile_overlap: float = 0.25,
        weights_dir: Path | str | None = None,
    ):
        if mode not in DETECTOR_MODES:
            raise ValueError(f"detector mode must be one of {DETECTOR_MODES}, not {mode!r}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], not {min_score}")
        self.mode = mode
        self.min_score = float(min_score)
        self.min_face_size = int(min_face_size)
        self.max_faces = max_faces
        self.tile_size = int(tile_size)
        self.tile_overlap = float(tile_overlap)
        wdir = Path(weights_dir) if weights_dir else WEIGHTS_DIR
        from agegender.weights import verified_path

        self._short = TaskPool(verified_path(MODEL_FILES["short"], wdir), min_score, "short") if mode in ("auto", "short") else None
        self._full = TaskPool(verified_path(MODEL_FILES["full"], wdir), min_score, "full") if mode in ("auto", "full") else None

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Detect faces in an RGB uint8 image (use :func:`agegender.io.images.load_image` for anything else).

        Safe for any array size: MediaPipe never sees a frame with a side above :data:`PASS_MAX_SIDE` (it aborts
        the process at 32,767 px, see :mod:`agegender.io.limits`); larger passes run on a downscaled copy.
        The passes (whole frame, tiles, border views) are independent MediaPipe calls of one core each, so they
        run side by side, two per core (:func:`agegender.engines.threads.handoff_width`: a call waits on MediaPipe's
        own threads, and the second worker fills the wait); only the merge waits.
        """
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            got = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise InvalidImageError(f"detect() expects an RGB uint8 array of shape (H, W, 3), not a {got}")
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            return []
        passes: list[_Pass] = []
        if self._full is not None:
            passes += [_Pass("full", "whole frame", rgb)] + self._tile_passes(rgb)
        if self._short is not None:
            passes.append(_Pass("short", "whole frame", rgb))
            if self._full is not None:
                passes += self._border_passes(rgb)
        found = parallel_map(self._run_pass, passes, handoff_width())
        full = [d for p, dets in zip(passes, found) if p.model == "full" for d in dets]
        candidates = list(full)
        if self._short is not None:
            short = [d for p, dets in zip(passes, found) if p.model == "short" and p.label == "whole frame"
                     for d in dets]
            if self._full is not None:
                border = [d for p, dets in zip(passes, found) if p.label == "border" for d in dets]
                short = self._confirmed_short(short, full) + border
            candidates += short
        candidates = [d for d in candidates if d.score >= PLAUSIBLE_SCORE or face_shaped(d)]
        faces = merge_detections(candidates)
        faces = [d for d in faces if d.score >= self.min_score and min(d.width, d.height) >= self.min_face_size]
        faces.sort(key=lambda d: -d.score)
        if self.max_faces is not None:
            faces = faces[: self.max_faces]
        faces.sort(key=lambda d: (d.box[0], d.box[1]))
        return faces

    def _run_pass(self, p: "_Pass") -> list[Detection]:
        """One pass: the MediaPipe call and the pass's own filter (cut tiles, border faces). A flat view (covered
        lens, black intro, blank page) holds no face nor part of one: framed in the border pass's grey, the black
        8 px corners of a black 16 px frame read as faces cut by the border (0.56)."""
        if _flat(p.view):
            return []
        task = self._full if p.model == "full" else self._short
        dets = self._run(task, p.view, p.x0, p.y0, pad=p.pad, max_side=p.max_side)
        return dets if p.keep is None else [d for d in dets if p.keep(d)]

    @staticmethod
    def _run(task: _TaskDetector, rgb: np.ndarray, x0: int = 0, y0: int = 0, pad: int = 0,
             max_side: int = 0) -> list[Detection]:
        """One MediaPipe pass over ``rgb`` (whose top-left is at ``x0, y0`` of the image), optionally framed by
        ``pad`` px of grey, on a copy downscaled to ``max_side`` (at most :data:`PASS_MAX_SIDE`) where larger.
        MediaPipe shrinks every frame to 128/192 px anyway, so this costs no recall, keeps its OpenCV far from
        SHRT_MAX, and spares it resizing a big frame on every call."""
        h, w = rgb.shape[:2]
        limit = min(max_side or PASS_MAX_SIDE, PASS_MAX_SIDE)
        scale = min(1.0, limit / (max(h, w) + 2 * pad))
        frame = rgb
        if scale < 1.0:
            # Bilinear, as MediaPipe resizes: INTER_AREA took 84 ms for a 2280 px photo, bilinear 1-13 ms.
            frame = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_LINEAR)
        p = int(round(pad * scale))
        if p:
            frame = cv2.copyMakeBorder(frame, p, p, p, p, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        if scale == 1.0 and not p:
            return task.detect(frame, offset=(x0, y0))
        sx, sy = w / (frame.shape[1] - 2 * p), h / (frame.shape[0] - 2 * p)
        out = []
        for det in task.detect(np.ascontiguousarray(frame)):
            bx1, by1, bx2, by2 = det.box
            box = ((bx1 - p) * sx + x0, (by1 - p) * sy + y0, (bx2 - p) * sx + x0, (by2 - p) * sy + y0)
            kps = (det.keypoints - np.float32([p, p])) * np.float32([sx, sy]) + np.float32([x0, y0])
            out.append(Detection(box=box, score=det.score, keypoints=kps.astype(np.float32), source=det.source))
        return out

    def _border_passes(self, rgb: np.ndarray) -> list["_Pass"]:
        """Big, near faces cut by the image border (the selfie-taker at the frame's edge).

        BlazeFace rarely fires on a face that runs off the frame. Framed by a grey border it does, at modest
        scores, and more reliably when it also sees each corner of the frame at about twice the scale. So the
        short-range model runs on the padded frame and on its four padded corner crops (:data:`BORDER_CROP` of
        each side; five calls of ~2 ms). A detection is kept only where it is what this pass is for: its box runs
        past the image border by :data:`BORDER_MIN_CUT` of its size, it clears :data:`BORDER_MIN_SCORE` and its
        keypoints are face-shaped (:func:`face_shaped`)."""
        h, w = rgb.shape[:2]
        ch, cw = max(1, int(round(h * BORDER_CROP))), max(1, int(round(w * BORDER_CROP)))
        views = [(rgb, 0, 0)]
        if min(ch, cw) >= MIN_TILE_SIDE:  # a corner sliver blown up 20x shows blocks, not a face part
            views += [(rgb[y0:y0 + ch, x0:x0 + cw], x0, y0) for y0 in (0, h - ch) for x0 in (0, w - cw)]

        def keep(det: Detection) -> bool:
            x1, y1, x2, y2 = det.box
            cut = max(-x1, -y1, x2 - w, y2 - h) / max(det.width, det.height, 1e-6)
            return cut >= BORDER_MIN_CUT and det.score >= BORDER_MIN_SCORE and face_shaped(det)

        return [_Pass("short", "border", view, x0, y0, pad=int(round(BORDER_PAD * max(view.shape[:2]))),
                      max_side=BORDER_VIEW_SIDE, keep=keep) for view, x0, y0 in views]

    def _confirmed_short(self, short: list[Detection], full: list[Detection]) -> list[Detection]:
        """In ``auto`` mode the short-range model is there for big, near faces, which it scores highly; its
        low-score detections that the full-range model does not confirm are mostly false positives (torsos,
        patterns), so they must clear :attr:`SHORT_ONLY_MIN_SCORE`."""
        if not short:
            return short
        boxes_full = np.array([d.box for d in full]).reshape(-1, 4)
        kept = []
        for det in short:
            confirmed = len(boxes_full) and box_iou(np.array([det.box]), boxes_full).max() > 0.3
            if confirmed or det.score >= self.SHORT_ONLY_MIN_SCORE:
                kept.append(det)
        return kept

    def _tile_passes(self, rgb: np.ndarray) -> list["_Pass"]:
        """Full-range passes on a pyramid of overlapping tiles (``tile_size``, 2×, 4× … up to the image).

        A face bigger than a level's overlap may be cut in every tile of that level; the next level (tiles twice
        as big, overlap twice as big) sees it whole, at a size BlazeFace handles well. Every level stays: on the
        annotated group photos and their 640x480, 720p and 1080p versions each level found faces no other pass
        found (``benchmarks/bench_detector.py``; docs/performance.md, *Detector cost*), e.g. one of the faces of
        ``insightface/t1.jpg`` at 640x480 is found only by its two 512 px tiles.
        """
        h, w = rgb.shape[:2]
        out: list[_Pass] = []
        tile = self.tile_size
        while max(h, w) > tile * 1.25 or (tile == self.tile_size and max(h, w) > tile):
            out += self._level_passes(rgb, tile)
            tile *= 2
        return out

    def _level_passes(self, rgb: np.ndarray, tile: int) -> list["_Pass"]:
        h, w = rgb.shape[:2]
        out: list[_Pass] = []
        for y0 in _tile_origins(h, tile, self.tile_overlap):
            for x0 in _tile_origins(w, tile, self.tile_overlap):
                x1, y1 = min(w, x0 + tile), min(h, y0 + tile)
                crop = rgb[y0:y1, x0:x1]
                if min(crop.shape[:2]) < MIN_TILE_SIDE:
                    continue  # no face fits in a sliver; a flat tile (margins, black bars) is skipped by its worker
                out.append(_Pass("full", f"tiles {tile}", crop, x0, y0, keep=_uncut_in_tile(x0, y0, x1, y1, w, h)))
        return out

    def close(self) -> None:
        for task in (self._short, self._full):
            if task is not None:
                task.close()
