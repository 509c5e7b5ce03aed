"""Where FaceDetector("auto") spends its time, pass by pass (issue 11, item 6: detector cost).

Every MediaPipe pass is timed (passes run side by side, one per core: the total is wall time, the passes' sum
CPU time) and attributed to its kind (whole frame full-range, each tile level,
whole frame short-range, the border pass), on a 640x480 webcam-sized frame, a 720p and a 1080p frame and the
~2000 px group photos. Frames are cut from the group photos under $AGEGENDER_DATA/group_photos (resized to fill
the size, centre crop). Run it on any checkout to compare versions (the attribution needs
``FaceDetector._run_pass``)::

    OMP_NUM_THREADS=1 python benchmarks/bench_detector.py [--repeat 7] [--json out.json]

Times are medians over ``--repeat`` runs after one warm-up; the load average is printed with them. Each pass kind
also gets what it *finds*: how many of the detector's final faces it detected (IoU ≥ 0.5 with a detection of that
pass, before the merge) and how many of those no other kind detected ("only"): a pass that costs time and is never
the only one to find a face is the candidate for a cut (issue 30, item 3).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from agegender import detection
from agegender.detection.boxes import box_iou
from agegender.detection.detector import FaceDetector
from agegender.io.images import load_image
from agegender.paths import data_root

FRAMES = {  # name: (photo under group_photos, width, height or None for the photo as it is)
    "640x480 webcam": ("insightface/t1.jpg", 640, 480),
    "720p": ("insightface/t1.jpg", 1280, 720),
    "1080p": ("facenet_pytorch/multiface.jpg", 1920, 1080),
    "1986x1545 bald_guys": ("dlib_examples_faces/bald_guys.jpg", None, None),
    "2280x1588 couple": ("deepface/couple.jpg", None, None),
}


def fill(img: np.ndarray, width: int, height: int) -> np.ndarray:
    scale = max(width / img.shape[1], height / img.shape[0])
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=interp)
    y, x = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    return np.ascontiguousarray(big[y:y + height, x:x + width])


class PassTimer:
    """Wraps ``FaceDetector._run_pass``: time of each MediaPipe pass, keyed by its model and label ("full tiles
    512", "short border", …). Passes run side by side, so their sum is CPU time, more than the wall time."""

    def __init__(self):
        self.ms: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.boxes: dict[str, list] = defaultdict(list)  # what each pass kind returned, in image coordinates
        self._orig = FaceDetector._run_pass
        timer = self

        def timed(detector, p):
            start = time.perf_counter()
            dets = []
            try:
                dets = timer._orig(detector, p)
                return dets
            finally:
                key = f"{p.model} {p.label}"
                with timer._lock:
                    timer.ms[key] += (time.perf_counter() - start) * 1000
                    timer.calls[key] += 1
                    timer.boxes[key] += [d.box for d in dets]

        self._lock = threading.Lock()
        FaceDetector._run_pass = timed

    def reset(self):
        self.ms.clear()
        self.calls.clear()
        self.boxes.clear()

    def finds(self, faces) -> dict[str, dict[str, int]]:
        """Per pass kind: final faces it detected, and those that no other kind detected."""
        if not faces:
            return {}
        final = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        hit = {k: (box_iou(final, np.array(b, dtype=np.float64).reshape(-1, 4)).max(axis=1) >= 0.5) if b
               else np.zeros(len(final), bool) for k, b in self.boxes.items()}
        kinds = np.array(list(hit.values())).sum(axis=0) if hit else np.zeros(len(final))
        return {k: {"found": int(h.sum()), "only": int((h & (kinds == 1)).sum())} for k, h in hit.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    root = data_root() / "group_photos"
    det = FaceDetector("auto")
    timer = PassTimer()
    rows = []
    print(f"agegender from {Path(detection.__file__).parent}; load average {os.getloadavg()[0]:.2f} "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    for name, (rel, width, height) in FRAMES.items():
        path = root / rel
        if not path.is_file():
            print(f"{name}: skipped, {path} missing")
            continue
        img = load_image(path)
        if width:
            img = fill(img, width, height)
        timer.reset()
        faces = det.detect(img)  # warm-up, and what each pass finds
        finds = timer.finds(faces)
        totals, per_pass = [], defaultdict(list)
        for _ in range(args.repeat):
            timer.reset()
            start = time.perf_counter()
            det.detect(img)
            totals.append((time.perf_counter() - start) * 1000)
            for key, ms in timer.ms.items():
                per_pass[key].append(ms)
        calls = dict(timer.calls)
        row = {"frame": name, "shape": list(img.shape[:2]), "faces": len(faces),
               "total_ms": round(statistics.median(totals), 1),
               "passes": {k: {"calls": calls[k], "ms": round(statistics.median(v), 1),
                              **finds.get(k, {"found": 0, "only": 0})} for k, v in per_pass.items()}}
        rows.append(row)
        print(f"{name:22s} {img.shape[1]}x{img.shape[0]}: {row['total_ms']:6.1f} ms, {len(faces)} faces")
        for key, val in sorted(row["passes"].items()):
            print(f"    {key:24s} {val['calls']:3d} calls {val['ms']:6.1f} ms  finds {val['found']:2d} "
                  f"(only this kind: {val['only']})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"load_before_after": os.getloadavg()[0], "rows": rows}, indent=1))
    det.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
