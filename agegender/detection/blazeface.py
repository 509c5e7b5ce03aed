"""MediaPipe ``FaceDetector`` tasks (Tasks API, BlazeFace): one task with the lock and the process-wide inference
slot that make it safe to share, and a pool of such tasks so that passes over one image can run side by side."""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from pathlib import Path

import numpy as np

from agegender.engines import threads as thread_policy
from agegender.errors import InvalidImageError
from agegender.detection.boxes import Detection
from agegender.io.limits import NATIVE_SIDE_LIMIT
from agegender.detection.native_log import quiet_native_logs

_BOX_CENTRE_FROM_KEYPOINTS = {"short": (0.0, 0.03), "full": (0.0, 0.0)}
"""Box centre minus the mean of the eyes, nose and mouth keypoints, in box widths/heights (mean over ~200
unclipped detections per model on the group photos and padded UTKFace chips); used for edge-clamped boxes."""


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

        quiet_native_logs()  # LiteRT's INFO/WARNING lines (46 per load, one per close) off by its own switch
        self._task = vision.FaceDetector.create_from_options(options)
        # Warm-up: the first call allocates buffers (and, verbose, prints a one-off LiteRT alignment warning).
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


class TaskPool:
    """Up to ``size`` tasks of one model (default: one per worker, :func:`agegender.engines.threads.pass_width`),
    handed out one caller at a time.

    A MediaPipe task runs one call at a time on one core, so a detector with a single task runs its 20-30 tile
    passes over a group photo one after another while the other core idles. With a task per core the passes run
    side by side (:func:`agegender.engines.threads.parallel_map`). The first task is made at once (a bad model file
    fails here, and the task is warm); the others only when two calls overlap (~10-25 ms each, a few MB).
    Same ``detect``/``close``/``source`` as :class:`_TaskDetector`.
    """

    def __init__(self, model_path: Path, min_score: float, source: str, size: int | None = None):
        self.source = source
        self.size = max(1, size or thread_policy.concurrent_passes() * thread_policy.OVERSUBSCRIBE)
        self._args = (model_path, min_score, source)
        self._free: "queue.LifoQueue[_TaskDetector]" = queue.LifoQueue()
        self._tasks: list[_TaskDetector] = []
        self._lock = threading.Lock()
        self._free.put(self._new_task())

    def _new_task(self) -> _TaskDetector:
        task = _TaskDetector(*self._args)
        self._tasks.append(task)
        return task

    def _acquire(self) -> _TaskDetector:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._tasks) < self.size:
                return self._new_task()
        return self._free.get()

    def detect(self, rgb: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[Detection]:
        task = self._acquire()
        try:
            return task.detect(rgb, offset)
        finally:
            self._free.put(task)

    def close(self) -> None:
        with self._lock:
            for task in self._tasks:
                task.close()


def _close_task(task) -> None:
    try:
        task.close()
    except Exception:  # at interpreter exit MediaPipe's executor is already shut down
        # Mark it closed so MediaPipe's own __del__ does not retry during module teardown and print a traceback;
        # the process is exiting, so the native handle is reclaimed by the OS.
        task._handle = None
