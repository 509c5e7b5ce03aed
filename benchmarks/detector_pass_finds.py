"""Which of FaceDetector("auto")'s passes is the only one to find a face (issue 30, item 3: cut what finds nothing).

Two measurements, no timing (run ``bench_detector.py`` for the cost of each pass):

1. **Annotated group photos** (the 13 photos of ``tests/test_detection.py``'s recall test, dlib's boxes and ours) at
   0.6x, 1x, 1.5x and 2.5x: for each ground-truth face the detector finds (IoU >= 0.4), which pass kinds detected it
   (IoU >= 0.5 with one of the pass's own detections, before the merge). A kind that is never the *only* finder on
   images of some size is a candidate for a cut there.
2. **A synthetic crowd**: the astronaut's face pasted 54-63 times at 40-130 px into a 3000x2000 noise canvas, the
   case the annotated photos lack (many small faces in a big photo).

    AGEGENDER_DATA=../shared/data python benchmarks/detector_pass_finds.py
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
from bench_detector import PassTimer  # noqa: E402
from test_detection import _annotated_ground_truth  # noqa: E402

from agegender.detection.boxes import box_iou  # noqa: E402
from agegender.detection.detector import FaceDetector  # noqa: E402
from agegender.io.images import load_image  # noqa: E402
from agegender.paths import data_root  # noqa: E402

SCALES = (0.6, 1.0, 1.5, 2.5)


def _clip(boxes, w: int, h: int) -> np.ndarray:
    return np.clip(np.asarray(boxes, float).reshape(-1, 4), 0, [w, h, w, h])


def annotated(det: FaceDetector, timer: PassTimer) -> dict[str, dict]:
    """Per pass kind: ground-truth faces it found, and those only it found (with the image size and face size)."""
    out: dict[str, dict] = defaultdict(lambda: {"found": 0, "only": 0, "only_where": []})
    root = data_root() / "group_photos"
    for name, gt in sorted(_annotated_ground_truth().items()):
        original = load_image(root / name)
        for s in SCALES:
            img = original if s == 1.0 else cv2.resize(
                original, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            h, w = img.shape[:2]
            timer.reset()
            final = _clip([f.box for f in det.detect(img)], w, h)
            if not len(final):
                continue
            passes = {k: _clip(b, w, h) for k, b in timer.boxes.items() if b}
            iou = box_iou(_clip(np.asarray(gt) * s, w, h), final)
            for row in iou:
                if row.max() < 0.4:
                    continue
                face = final[row.argmax():row.argmax() + 1]
                kinds = [k for k, b in passes.items() if box_iou(face, b).max() >= 0.5]
                for k in kinds:
                    out[k]["found"] += 1
                    if len(kinds) == 1:
                        out[k]["only"] += 1
                        out[k]["only_where"].append(f"{name} x{s} ({w}x{h}, face {face[0, 2] - face[0, 0]:.0f} px)")
    return dict(out)


def crowd(det: FaceDetector, timer: PassTimer) -> list[dict]:
    from skimage import data as skdata

    head = skdata.astronaut()[20:260, 120:340]
    rows = []
    for px in (40, 60, 90, 130):
        canvas = np.random.default_rng(0).integers(60, 160, (2000, 3000, 1)).astype(np.uint8).repeat(3, axis=2)
        face = cv2.resize(head, (px, round(px * head.shape[0] / head.shape[1])), interpolation=cv2.INTER_AREA)
        pasted = 0
        for y in range(100, 2000 - face.shape[0], 300):
            for x in range(100, 3000 - face.shape[1], 330):
                canvas[y:y + face.shape[0], x:x + face.shape[1]] = face
                pasted += 1
        timer.reset()
        faces = det.detect(canvas)
        rows.append({"face_px": px, "pasted": pasted, "found": len(faces), "by_pass": timer.finds(faces)})
    return rows


def main() -> int:
    det, timer = FaceDetector("auto"), PassTimer()
    print(f"annotated group photos at {SCALES}: ground-truth faces found by each pass kind (only by it)")
    for kind, row in sorted(annotated(det, timer).items()):
        print(f"  {kind:20s} {row['found']:4d} ({row['only']})")
        for where in row["only_where"]:
            print(f"      only here: {where}")
    print("synthetic crowd, 3000x2000:")
    for row in crowd(det, timer):
        finds = ", ".join(f"{k} {v['found']} ({v['only']})" for k, v in sorted(row["by_pass"].items()) if v["found"])
        print(f"  {row['face_px']:3d} px faces: {row['found']} of {row['pasted']} found; {finds}")
    det.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
