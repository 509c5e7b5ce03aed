"""FaceDetector on real images: the astronaut, mosaics, faces cut by the border, options, and the group-photo
recall bar on dlib's annotated example faces."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from agegender.detection import Detection, FaceDetector, box_iou, merge_detections

from conftest import data_path

MODES = ("short", "full", "auto")


def _inside(points: np.ndarray, box, pad: float = 0.0) -> bool:
    x1, y1, x2, y2 = box
    return bool(np.all((points[:, 0] >= x1 - pad) & (points[:, 0] <= x2 + pad)
                       & (points[:, 1] >= y1 - pad) & (points[:, 1] <= y2 + pad)))


# ------------------------------------------------------------------------------------------------- astronaut
@pytest.mark.parametrize("mode", MODES)
def test_astronaut_one_face(mode, astronaut, detectors):
    dets = detectors(mode).detect(astronaut)
    assert len(dets) == 1, f"{mode}: {len(dets)} faces"
    det = dets[0]
    assert isinstance(det, Detection) and det.source in ("short", "full")
    x1, y1, x2, y2 = det.box
    # Measured: short (177, 82, 272, 177), full (173, 67, 276, 170); the face spans x≈175-275, y≈65-180.
    assert 80 <= det.width <= 130 and 80 <= det.height <= 130, det.box
    assert 150 <= x1 <= 200 and 250 <= x2 <= 300, det.box
    assert 45 <= y1 <= 100 and 150 <= y2 <= 200, det.box
    assert 0.5 <= det.score <= 1.0
    kps = det.keypoints
    assert kps.shape == (6, 2) and kps.dtype == np.float32 and np.all(np.isfinite(kps))
    assert _inside(kps[:4], det.box), "eyes, nose and mouth must lie inside the box"
    assert _inside(kps[4:], det.box, pad=0.1 * det.width), "ears lie at most slightly outside the box"
    (rx, ry), (lx, ly) = kps[0], kps[1]
    assert rx < lx, "right eye (subject's right) is on the image's left"
    assert abs(ly - ry) < 0.15 * det.width, "the astronaut's eyes are nearly level"
    assert 0.3 * det.width < lx - rx < 0.6 * det.width
    assert min(ry, ly) < kps[2, 1] < kps[3, 1], "eyes above nose above mouth"


def test_detect_accepts_only_rgb_uint8(detectors, astronaut):
    det = detectors("full")
    with pytest.raises(ValueError, match="RGB uint8"):
        det.detect(astronaut[..., 0])
    with pytest.raises(ValueError, match="RGB uint8"):
        det.detect(astronaut.astype(np.float32))


@pytest.mark.parametrize("mode", ["full", "auto"])
def test_mosaic_one_face_per_cell(mode, mosaic, detectors, astronaut_reference):
    img, layout = mosaic
    dets = detectors(mode).detect(img)
    assert len(dets) == len(layout), f"{mode}: {len(dets)} faces for {len(layout)} astronauts: {[d.box for d in dets]}"
    ref = np.array(astronaut_reference["full"].box)
    expected = np.array([[x0 + v * side / 512 if i % 2 == 0 else y0 + v * side / 512 for i, v in enumerate(ref)]
                         for x0, y0, side in layout])
    iou = box_iou(np.array([d.box for d in dets]), expected)
    # Exactly one detection per astronaut, each well aligned with where that astronaut's face is.
    assert np.all(iou.max(axis=0) > 0.5), iou.round(2)
    assert np.all((iou > 0.3).sum(axis=0) == 1) and np.all((iou > 0.3).sum(axis=1) == 1), iou.round(2)
    xs = [d.box[0] for d in dets]
    assert xs == sorted(xs), "detections are returned left to right"


def test_short_range_mode_misses_small_faces_in_big_frames(mosaic, detectors):
    """Documents why group photos need ``full``/``auto``: the short-range model sees the frame at 128 px."""
    img, layout = mosaic
    assert len(detectors("short").detect(img)) < len(layout)


# ---------------------------------------------------------------------------------------- faces cut by the border
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("side", ["left", "top"])
def test_face_cut_by_left_or_top_border(mode, side, astronaut, detectors, astronaut_reference):
    ref = astronaut_reference[mode]
    x1, y1, x2, y2 = ref.box
    if side == "left":  # cut 20 % of the face off on the left
        cut = int(round(x1 + 0.2 * ref.width))
        img = np.ascontiguousarray(astronaut[:, cut:])
        shift = np.array([cut, 0, cut, 0], float)
    else:
        cut = int(round(y1 + 0.2 * ref.height))
        img = np.ascontiguousarray(astronaut[cut:, :])
        shift = np.array([0, cut, 0, cut], float)
    dets = detectors(mode).detect(img)
    assert len(dets) == 1, f"{mode}: face cut by the {side} border not found ({len(dets)} faces)"
    got = np.array(dets[0].box)
    expected = np.array(ref.box) - shift
    a = 0 if side == "left" else 1  # the axis cut by the border
    tol = 0.1 * ref.width
    # The box is placed on the face: its far edge stays where it was (not pushed inwards) and its near edge is
    # outside the image (extending past the border like a face cut on the right) or clipped to 0.
    assert abs(got[a + 2] - expected[a + 2]) <= tol, f"far edge {got} vs expected {expected}"
    assert got[a] <= 1.0, got
    if got[a] < 0:
        assert abs(got[a] - expected[a]) <= tol, f"near edge {got} vs expected {expected}"
    other = 1 - a
    assert abs(got[other] - expected[other]) <= tol and abs(got[other + 2] - expected[other + 2]) <= tol
    # Keypoints keep following the face (they are never clamped; the short-range model is noisier on a cut face).
    moved_kps = ref.keypoints[:4] - shift[:2]
    assert np.abs(dets[0].keypoints[:4] - moved_kps).max() <= 2 * tol


@pytest.mark.parametrize("mode", ["short", "full"])
def test_face_cut_by_right_or_bottom_border(mode, astronaut, detectors, astronaut_reference):
    ref = astronaut_reference[mode]
    x1, y1, x2, y2 = ref.box
    right = int(round(x2 - 0.2 * ref.width))
    dets = detectors(mode).detect(np.ascontiguousarray(astronaut[:, :right]))
    assert len(dets) == 1
    assert np.abs(np.array(dets[0].box) - np.array(ref.box)).max() <= 0.1 * ref.width, (dets[0].box, ref.box)


# ------------------------------------------------------------------------------------------------------- options
def test_max_faces_keeps_the_best_scores(mosaic):
    img, _ = mosaic
    det_all = FaceDetector("full")
    det_two = FaceDetector("full", max_faces=2)
    try:
        every = det_all.detect(img)
        two = det_two.detect(img)
    finally:
        det_all.close()
        det_two.close()
    assert len(every) == 6 and len(two) == 2
    best = sorted(every, key=lambda d: -d.score)[:2]
    assert sorted(d.box for d in two) == sorted(d.box for d in best)
    assert two[0].box[0] <= two[1].box[0]


def test_min_face_size_drops_small_faces(mosaic, detectors):
    img, layout = mosaic
    every = detectors("full").detect(img)
    sizes = sorted(min(d.width, d.height) for d in every)
    threshold = (sizes[2] + sizes[3]) / 2  # keeps the three biggest astronauts
    det = FaceDetector("full", min_face_size=int(threshold))
    try:
        big = det.detect(img)
    finally:
        det.close()
    assert len(big) == 3
    assert all(min(d.width, d.height) >= threshold for d in big)


def test_min_score(astronaut, detectors, astronaut_reference):
    score = astronaut_reference["full"].score
    strict = FaceDetector("full", min_score=min(0.999, score + 0.05))
    try:
        assert strict.detect(astronaut) == []
    finally:
        strict.close()
    assert len(detectors("full").detect(astronaut)) == 1


def test_invalid_options():
    with pytest.raises(ValueError, match="mode"):
        FaceDetector("medium")
    with pytest.raises(ValueError, match="min_score"):
        FaceDetector("full", min_score=1.5)


@pytest.mark.parametrize("mode", MODES)
def test_no_face(mode, coffee, detectors):
    assert detectors(mode).detect(coffee) == []
    gradient = np.repeat(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], 480, axis=0).repeat(3, axis=2)
    assert detectors(mode).detect(gradient) == []
    assert detectors(mode).detect(np.zeros((64, 48, 3), np.uint8)) == []


def test_tiny_image(detectors):
    assert detectors("auto").detect(np.full((1, 1, 3), 200, np.uint8)) == []


# ---------------------------------------------------------------------------------- box_iou and merge_detections
def _det(box, score, source="full"):
    return Detection(box=tuple(float(v) for v in box), score=score, keypoints=np.zeros((6, 2), np.float32),
                     source=source)


def test_box_iou_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [2, 2, 4, 4]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0, 4 / 100])
    np.testing.assert_allclose(box_iou([0, 0, 10, 10], [0, 0, 10, 10]), [[1.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)
    degenerate = box_iou([[5, 5, 5, 5]], [[5, 5, 5, 5]])
    assert np.all(np.isfinite(degenerate)) and degenerate[0, 0] == 0.0
    np.testing.assert_allclose(box_iou(b, a), iou.T)


def test_merge_detections_suppresses_overlaps_keeps_best():
    assert merge_detections([]) == []
    best = _det((0, 0, 100, 100), 0.9)
    overlapping = _det((10, 10, 110, 110), 0.8)  # IoU 0.68
    far = _det((300, 0, 400, 100), 0.6)
    kept = merge_detections([overlapping, far, best])
    assert kept == [best, far], "highest score first, the overlapping weaker box removed"


def test_merge_detections_containment_and_thresholds():
    big = _det((0, 0, 100, 100), 0.7)
    inner = _det((20, 20, 60, 60), 0.9)  # IoU 0.16 but 100 % contained in the big box
    kept = merge_detections([big, inner])
    assert kept == [inner]
    assert len(merge_detections([big, inner], containment_threshold=1.01)) == 2
    a, b = _det((0, 0, 100, 100), 0.9), _det((50, 0, 150, 100), 0.8)  # IoU 1/3, contained 50 %
    assert len(merge_detections([a, b])) == 1  # iou_threshold 0.3
    assert len(merge_detections([a, b], iou_threshold=0.4)) == 2


# --------------------------------------------------------------------------------------- group-photo recall bar
def _dlib_ground_truth(folder) -> dict[str, np.ndarray]:
    boxes: dict[str, list] = {}
    for name in ("testing.xml", "training.xml"):
        for image in ET.parse(folder / name).getroot().iter("image"):
            for b in image.iter("box"):
                if b.get("ignore") == "1":
                    continue
                left, top = float(b.get("left")), float(b.get("top"))
                boxes.setdefault(image.get("file"), []).append(
                    [left, top, left + float(b.get("width")), top + float(b.get("height"))])
    return {k: np.array(v) for k, v in boxes.items()}


def _greedy_matches(gt: np.ndarray, pred: np.ndarray, threshold: float) -> int:
    """One-to-one matching, highest IoU pairs first; returns the number of matched ground-truth boxes."""
    if len(gt) == 0 or len(pred) == 0:
        return 0
    iou = box_iou(gt, pred)
    pairs = sorted(((iou[i, j], i, j) for i in range(len(gt)) for j in range(len(pred)) if iou[i, j] >= threshold),
                   reverse=True)
    used_gt, used_pred = set(), set()
    for _, i, j in pairs:
        if i not in used_gt and j not in used_pred:
            used_gt.add(i)
            used_pred.add(j)
    return len(used_gt)


def test_greedy_matching_is_one_to_one():
    gt = np.array([[0, 0, 10, 10], [1, 0, 11, 10]])
    assert _greedy_matches(gt, np.array([[0, 0, 10, 10]]), 0.4) == 1
    assert _greedy_matches(gt, np.array([[0, 0, 10, 10], [1, 0, 11, 10]]), 0.4) == 2
    assert _greedy_matches(gt, np.array([[50, 50, 60, 60]]), 0.4) == 0


@pytest.mark.data
def test_recall_on_dlib_example_faces(detectors):
    from agegender.imageio import load_image

    folder = data_path("group_photos", "dlib_examples_faces")
    truth = _dlib_ground_truth(folder)
    n_gt = sum(len(v) for v in truth.values())
    assert len(truth) == 9 and n_gt == 43, "ground truth changed: expected 43 boxes in 9 images"
    det = detectors("auto")
    matched = false_pos = 0
    lines = []
    for name, gt in sorted(truth.items()):
        pred = np.array([d.box for d in det.detect(load_image(folder / name))]).reshape(-1, 4)
        m = _greedy_matches(gt, pred, 0.4)
        matched += m
        false_pos += len(pred) - m
        lines.append(f"{name}: {m}/{len(gt)} found, {len(pred) - m} false positive(s)")
    recall = matched / n_gt
    fp_per_image = false_pos / len(truth)
    summary = (f"dlib example faces, FaceDetector('auto'), IoU >= 0.4: recall {matched}/{n_gt} = {recall:.1%}, "
               f"{false_pos} false positives in {len(truth)} images ({fp_per_image:.2f}/image)")
    print("\n" + "\n".join(lines) + "\n" + summary)
    assert recall >= 0.95, summary
    assert fp_per_image <= 0.5, summary
