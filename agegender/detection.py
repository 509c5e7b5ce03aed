"""Face detection with MediaPipe's BlazeFace models (Tasks API), tuned for group photos.

BlazeFace looks at a 128 px (short range) or 192 px (full range) square copy of the whole frame, so a 40 px face
in a 2000 px group photo shrinks to ~4 px and is lost. We therefore run the full-range model on the whole image
*and* on overlapping tiles, drop tile detections cut by an inner tile edge (a neighbouring tile sees that face
whole) and merge everything with NMS. ``auto`` adds the short-range model, which is more reliable on big, near
faces (selfies, webcams).

MediaPipe task objects are not thread-safe, so every call into them holds one lock per detector.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from .engines import threads as thread_policy
from .errors import InvalidImageError
from .limits import NATIVE_SIDE_LIMIT
from .paths import WEIGHTS_DIR

# MediaPipe/LiteRT print INFO and WARNING lines (e.g. "Sparsity tensors may not yet be fully supported") on every
# model load; they are noise for our users. Must be set before mediapipe is imported.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

log = logging.getLogger(__name__)

DetectorMode = Literal["auto", "short", "full"]
DETECTOR_MODES: tuple[str, ...] = ("auto", "short", "full")

MODEL_FILES = {
    "short": "face_detection_short_range.tflite",
    "full": "face_detection_full_range_sparse.tflite",
}

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
"""BlazeFace keypoint order; 'right' is the subject's right, i.e. the eye on the image's left."""

_BOX_CENTRE_FROM_KEYPOINTS = {"short": (0.0, 0.03), "full": (0.0, 0.0)}
"""Box centre minus the mean of the eyes, nose and mouth keypoints, in box widths/heights (mean over ~200
unclipped detections per model on the group photos and padded UTKFace chips); used for edge-clamped boxes."""


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


@dataclass(frozen=True)
class Detection:
    """One face found in an image, in that image's pixel coordinates (floats, x to the right, y down)."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray = field(repr=False)  # (6, 2) float32, order of KEYPOINT_NAMES
    source: str = "full"  # which BlazeFace model found it ("short"/"full"): their boxes are framed differently

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def _pairwise_overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersection areas (N, M), areas of a (N,), areas of b (M,)) for boxes in x1, y1, x2, y2."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return iw * ih, area_a, area_b


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes ``a`` (N, 4) and ``b`` (M, 4) in x1, y1, x2, y2."""
    inter, area_a, area_b = _pairwise_overlap(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _intersection_over_smaller(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter, area_a, area_b = _pairwise_overlap(a, b)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.where(smaller > 0, inter / np.maximum(smaller, 1e-9), 0.0)


def merge_detections(
    detections: list[Detection], iou_threshold: float = 0.3, containment_threshold: float = 0.7
) -> list[Detection]:
    """Greedy NMS across passes and tiles.

    Besides IoU we suppress a box mostly contained in a better one: the same face seen at two scales gives a
    small box inside a big one whose IoU can be low.
    """
    if not detections:
        return []
    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)
    boxes = np.array([detections[i].box for i in order], dtype=np.float64)
    iou = box_iou(boxes, boxes)
    contain = _intersection_over_smaller(boxes, boxes)
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for rank in range(len(order)):
        if suppressed[rank]:
            continue
        keep.append(order[rank])
        suppressed |= (iou[rank] > iou_threshold) | (contain[rank] > containment_threshold)
    return [detections[i] for i in keep]


class _TaskDetector:
    """One MediaPipe FaceDetector task plus the lock that makes it safe to share."""

    def __init__(self, model_path: Path, min_score: float, source: str):
        self.source = source
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=float(min_score),
            min_suppression_threshold=0.3,
        )
        import mediapipe as mp

        with _native_stderr_silenced():
            self._task = vision.FaceDetector.create_from_options(options)
            # Warm-up: the first call allocates buffers and prints a one-off LiteRT alignment warning.
            self._task.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros((64, 64, 3), np.uint8)))
        self._lock = threading.Lock()
        # Close explicitly: MediaPipe's __del__ at interpreter exit raises "NoneType is not callable".
        self._finalizer = weakref.finalize(self, _close_task, self._task)
        atexit.register(self._finalizer)

    def detect(self, rgb: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[Detection]:
        import mediapipe as mp

        h, w = rgb.shape[:2]
        if max(h, w) >= NATIVE_SIDE_LIMIT:  # last line of defence: FaceDetector._run never lets this happen
            raise InvalidImageError(f"a {w}x{h} frame would abort MediaPipe (sides must stay below {NATIVE_SIDE_LIMIT})")
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        # The task's lock (MediaPipe tasks are not thread-safe), inside the process-wide slot that forward passes
        # take too: on a small CPU one caller's detection and another's network pass queue instead of
        # oversubscribing the cores (agegender.engines.threads).
        with thread_policy.INFERENCE_SLOTS, self._lock:
            result = self._task.detect(image)
        out = []
        ox, oy = offset
        for det in result.detections:
            bb = det.bounding_box
            kps = np.array([[kp.x * w + ox, kp.y * h + oy] for kp in det.keypoints], dtype=np.float32)
            if kps.shape != (6, 2):
                kps = np.zeros((6, 2), dtype=np.float32)
            bw, bh = float(bb.width), float(bb.height)
            x1 = float(bb.origin_x) + ox
            y1 = float(bb.origin_y) + oy
            # MediaPipe clamps a box's origin to 0 but keeps its size, so a face cut by the left/top image edge
            # comes back shifted inwards by the part that is cut off. Keypoints are not clamped: re-centre the box on
            # them along the clamped axis (the box then extends past the edge, as it already does right/bottom).
            if (bb.origin_x <= 0 or bb.origin_y <= 0) and kps.any() and np.all(np.isfinite(kps)):
                centre = kps[:4].mean(0)
                dx, dy = _BOX_CENTRE_FROM_KEYPOINTS.get(self.source, (0.0, 0.0))
                if bb.origin_x <= 0:
                    x1 = min(float(ox), float(centre[0]) + (dx - 0.5) * bw)
                if bb.origin_y <= 0:
                    y1 = min(float(oy), float(centre[1]) + (dy - 0.5) * bh)
            box = (x1, y1, x1 + bw, y1 + bh)
            out.append(Detection(box=box, score=float(det.categories[0].score), keypoints=kps, source=self.source))
        return out

    def close(self) -> None:
        self._finalizer()


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide LiteRT's C++ INFO/WARNING lines printed on model load (one per tensor: "Sparsity tensors may not
    yet be fully supported"). They bypass Python logging, so only redirecting file descriptor 2 silences them.
    Set AGEGENDER_VERBOSE=1 to see them."""
    if os.environ.get("AGEGENDER_VERBOSE") == "1":
        yield
        return
    with _STDERR_LOCK:  # two threads swapping fd 2 at once could leave it pointing at /dev/null for good
        yield from _redirect_fd2_to_devnull()


_STDERR_LOCK = threading.Lock()


def _redirect_fd2_to_devnull():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (some embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _close_task(task) -> None:
    try:
        task.close()
    except Exception:  # at interpreter exit MediaPipe's executor is already shut down
        # Mark it closed so MediaPipe's own __del__ does not retry during module teardown and print a traceback;
        # the process is exiting, so the native handle is reclaimed by the OS.
        task._handle = None


def face_shaped(det: Detection) -> bool:
    """Whether the BlazeFace keypoints are arranged like a face: nose and mouth below the line of the eyes (in
    the eyes' own frame, so tilted heads pass), the mouth below the nose, and not a nose that sits both beside one
    eye of a frontal pair and nearly level with the eyes.

    Why: BlazeFace's low-score false positives fit its keypoints to whatever it saw. The hand with a ring on
    ``facenet_pytorch/multiface.jpg`` (score 0.53) has frontal eyes (0.45 box widths apart), its "nose" 0.38 eye
    distances off their middle and only 0.30 below them; real faces on the annotated photos have one anomaly or
    the other (a turned head: nose off-centre; a raised chin: nose high), never both.
    """
    k = np.asarray(det.keypoints, dtype=np.float64)
    if k.shape != (6, 2) or not np.all(np.isfinite(k)) or not k.any():
        return False
    eyes = k[1] - k[0]
    dist = float(np.hypot(*eyes))
    if dist < 1e-6 or det.width <= 0:
        return False
    u = eyes / dist
    v = np.array([-u[1], u[0]])  # points down the face
    if abs(np.degrees(np.arctan2(u[1], u[0]))) > 60:
        return False
    mid = (k[0] + k[1]) / 2
    nose_down, mouth_down = (k[2] - mid) @ v / dist, (k[3] - mid) @ v / dist
    nose_side = (k[2] - mid) @ u / dist
    if not (0.2 <= nose_down <= 1.8 and mouth_down - nose_down >= 0.15 and mouth_down <= 2.8):
        return False
    frontal_eyes = dist / det.width >= 0.4
    return not (frontal_eyes and abs(nose_side) > 0.32 and nose_down < 0.4)


def _flat(crop: np.ndarray) -> bool:
    """True for a tile with (almost) no texture, judged on every 8th pixel (~4,000 samples; a few µs)."""
    return float(crop[::8, ::8].std()) < 3.0


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
        from .weights import verified_path

        self._short = _TaskDetector(verified_path(MODEL_FILES["short"], wdir), min_score, "short") if mode in ("auto", "short") else None
        self._full = _TaskDetector(verified_path(MODEL_FILES["full"], wdir), min_score, "full") if mode in ("auto", "full") else None

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Detect faces in an RGB uint8 image (use :func:`agegender.imageio.load_image` for anything else).

        Safe for any array size: MediaPipe never sees a frame with a side above :data:`PASS_MAX_SIDE` (it aborts
        the process at 32,767 px, see :mod:`agegender.limits`); larger passes run on a downscaled copy.
        """
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            got = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise InvalidImageError(f"detect() expects an RGB uint8 array of shape (H, W, 3), not a {got}")
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            return []
        candidates: list[Detection] = []
        full: list[Detection] = []
        if self._full is not None:
            full = self._run(self._full, rgb) + self._detect_tiles(rgb)
            candidates += full
        if self._short is not None:
            short = self._run(self._short, rgb)
            if self._full is not None:
                short = self._confirmed_short(short, full) + self._border_faces(rgb)
            candidates += short
        candidates = [d for d in candidates if d.score >= PLAUSIBLE_SCORE or face_shaped(d)]
        faces = merge_detections(candidates)
        faces = [d for d in faces if d.score >= self.min_score and min(d.width, d.height) >= self.min_face_size]
        faces.sort(key=lambda d: -d.score)
        if self.max_faces is not None:
            faces = faces[: self.max_faces]
        faces.sort(key=lambda d: (d.box[0], d.box[1]))
        return faces

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

    def _border_faces(self, rgb: np.ndarray) -> list[Detection]:
        """Big, near faces cut by the image border (the selfie-taker at the frame's edge).

        BlazeFace rarely fires on a face that runs off the frame. Framed by a grey border it does, at modest
        scores, and more reliably when it also sees each corner of the frame at about twice the scale. So the
        short-range model runs on the padded frame and on its four padded corner crops (:data:`BORDER_CROP` of
        each side; five calls of ~1.5 ms). A detection is kept only where it is what this pass is for: its box runs
        past the image border by :data:`BORDER_MIN_CUT` of its size, it clears :data:`BORDER_MIN_SCORE` and its
        keypoints are face-shaped (:func:`face_shaped`)."""
        h, w = rgb.shape[:2]
        ch, cw = max(1, int(round(h * BORDER_CROP))), max(1, int(round(w * BORDER_CROP)))
        views = [(rgb, 0, 0)] + [(rgb[y0:y0 + ch, x0:x0 + cw], x0, y0) for y0 in (0, h - ch) for x0 in (0, w - cw)]
        kept = []
        for view, x0, y0 in views:
            pad = int(round(BORDER_PAD * max(view.shape[:2])))
            for det in self._run(self._short, view, x0, y0, pad=pad, max_side=BORDER_VIEW_SIDE):
                x1, y1, x2, y2 = det.box
                cut = max(-x1, -y1, x2 - w, y2 - h) / max(det.width, det.height, 1e-6)
                if cut >= BORDER_MIN_CUT and det.score >= BORDER_MIN_SCORE and face_shaped(det):
                    kept.append(det)
        return kept

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

    def _detect_tiles(self, rgb: np.ndarray) -> list[Detection]:
        """Full-range detections on a pyramid of overlapping tiles (``tile_size``, 2×, 4× … up to the image).

        A face bigger than a level's overlap may be cut in every tile of that level; the next level (tiles twice
        as big, overlap twice as big) sees it whole, at a size BlazeFace handles well. Every level stays: on the
        annotated group photos and their 640x480, 720p and 1080p versions each level found faces no other pass
        found (``benchmarks/bench_detector.py``; README, *Detector cost*), e.g. one of the faces of
        ``insightface/t1.jpg`` at 640x480 is found only by its two 512 px tiles.
        """
        h, w = rgb.shape[:2]
        out: list[Detection] = []
        tile = self.tile_size
        while max(h, w) > tile * 1.25 or (tile == self.tile_size and max(h, w) > tile):
            out += self._detect_level(rgb, tile)
            tile *= 2
        return out

    def _detect_level(self, rgb: np.ndarray, tile: int) -> list[Detection]:
        h, w = rgb.shape[:2]
        out: list[Detection] = []
        margin = 2.0
        for y0 in _tile_origins(h, tile, self.tile_overlap):
            for x0 in _tile_origins(w, tile, self.tile_overlap):
                x1, y1 = min(w, x0 + tile), min(h, y0 + tile)
                crop = rgb[y0:y1, x0:x1]
                if min(crop.shape[:2]) < MIN_TILE_SIDE or _flat(crop):
                    continue  # no face fits in a sliver, and none hides in a flat area (margins, black bars)
                for det in self._run(self._full, crop, x0, y0):
                    bx1, by1, bx2, by2 = det.box
                    # A face cut by an inner tile edge is seen whole by the neighbouring tile (overlap), by the
                    # next pyramid level or by the global pass; a partial box would make an off-centre crop.
                    cut = (x0 > 0 and bx1 <= x0 + margin) or (y0 > 0 and by1 <= y0 + margin) or (
                        x1 < w and bx2 >= x1 - margin) or (y1 < h and by2 >= y1 - margin)
                    if not cut:
                        out.append(det)
        return out

    def close(self) -> None:
        for task in (self._short, self._full):
            if task is not None:
                task.close()
