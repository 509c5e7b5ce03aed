"""The library's face tracker (``agegender.video.tracking``): ids across frames, smoothed labels, box motion between
analysed frames and the reset when the frame size changes. Faces are built by hand, so every number is known."""

from __future__ import annotations

import numpy as np
import pytest

from agegender import Face
from agegender.video.tracking import FaceTracker, draw_tracks


def face(box, age: int, p_female: float, index: int = 1) -> Face:
    probs = np.zeros(101)
    probs[age] = 1.0
    return Face(box=box, score=0.9, keypoints=np.zeros((6, 2)), age=float(age), age_low=float(age),
                age_high=float(age), age_probs=probs, groups={}, gender="female" if p_female >= 0.5 else "male",
                p_female=p_female, index=index)


def test_tracker_keeps_ids_and_smooths_labels():
    tracker = FaceTracker(iou_threshold=0.3, alpha=0.5, max_missed=1)
    first = tracker.update([face((0, 0, 100, 100), 30, 0.9), face((300, 0, 400, 100), 60, 0.1)])
    assert [t.track_id for t in first] == [1, 2]
    moved = tracker.update([face((305, 5, 405, 105), 70, 0.1), face((8, 4, 108, 104), 40, 0.9)])
    assert [t.track_id for t in moved] == [1, 2]  # matched by overlap, whatever the detection order
    assert moved[0].hits == 2 and moved[0].age == pytest.approx(35.0)  # EMA, alpha 0.5: halfway
    assert moved[1].age == pytest.approx(65.0) and moved[1].gender == "male"
    assert moved[0].label() == "#1 F 35 (2f)"
    assert moved[0].last_age_probs.argmax() == 40 and moved[0].last_p_female == 0.9  # the raw newest estimate
    new = tracker.update([face((600, 0, 700, 100), 20, 0.5)])
    assert [t.track_id for t in new] == [3]
    tracker.update([])
    assert [t.track_id for t in tracker.tracks] == [3]  # tracks 1 and 2 missed twice (> max_missed): dropped


def test_boxes_are_extrapolated_with_the_tracks_velocity():
    tracker = FaceTracker(velocity_alpha=1.0, max_extrapolation=1.0)
    tracker.update([face((100, 50, 200, 150), 30, 0.2)], t=0.0)
    (track,) = tracker.update([face((120, 50, 220, 150), 30, 0.2)], t=0.5)  # 40 px/s to the right
    assert track.velocity == pytest.approx([40.0, 0.0, 40.0, 0.0])
    (ahead,) = tracker.predict([track], t=0.75)
    assert ahead.box == pytest.approx((130.0, 50.0, 230.0, 150.0))
    assert track.box == (120.0, 50.0, 220.0, 150.0)  # the track keeps its measured box
    (capped,) = tracker.predict([track], t=10.0)  # a lost face does not drift across the picture
    assert capped.box == pytest.approx((160.0, 50.0, 260.0, 150.0))
    (same,) = tracker.predict([track], t=0.2)  # never extrapolated backwards
    assert same.box == pytest.approx(track.box)


def test_matching_uses_the_extrapolated_box():
    """An 80 px face at x = 0, 30, 100: the last jump leaves the raw boxes barely overlapping (IoU 0.07), but the
    box moved on with the track's velocity (30 px per step) overlaps by 0.33, so the face keeps its id."""
    def ids(max_extrapolation: float) -> list[int]:
        tracker = FaceTracker(velocity_alpha=1.0, max_center_shift=0.0, max_extrapolation=max_extrapolation)
        return [tracker.update([face((x, 0, x + 80, 80), 30, 0.2)], t=float(step))[0].track_id
                for step, x in enumerate((0, 30, 100))]

    assert ids(1.0) == [1, 1, 1]
    assert ids(0.0) == [1, 1, 2]  # without extrapolation (and IoU matching only) the face gets a new id


def test_fast_face_is_matched_by_centre_distance_but_not_to_another_size():
    tracker = FaceTracker()
    tracker.update([face((0, 0, 80, 80), 30, 0.2)], t=0.0)
    (moved,) = tracker.update([face((70, 0, 150, 80), 31, 0.2)], t=1.0)  # IoU 0.06, centre 70 px = 0.9 box
    assert moved.track_id == 1 and moved.hits == 2
    (bigger,) = tracker.update([face((140, 0, 340, 200), 31, 0.2)], t=2.0)  # 2.5x the side: someone else
    assert bigger.track_id == 2


def test_tracks_reset_when_the_frame_size_changes():
    tracker = FaceTracker()
    tracker.update([face((1000, 500, 1400, 900), 30, 0.2)], t=0.0, frame_size=(2160, 3840))
    assert len(tracker.tracks) == 1
    seen = tracker.update([], t=0.1, frame_size=(480, 640))  # the camera switched to 640x480
    assert seen == [] and tracker.tracks == []  # the stale 4K box is gone at once, not after max_missed frames
    (new,) = tracker.update([face((100, 100, 200, 200), 30, 0.2)], t=0.2, frame_size=(480, 640))
    assert new.track_id == 2 and new.hits == 1  # ids stay unique within the stream
    assert not tracker.check_frame_size((480, 640)) and tracker.tracks
    tracker.reset()
    assert tracker.tracks == [] and tracker.frame_size is None
    assert tracker.update([face((0, 0, 10, 10), 30, 0.2)])[0].track_id == 1


def test_draw_tracks_draws_each_box_in_its_gender_colour():
    tracker = FaceTracker()
    tracks = tracker.update([face((10, 10, 60, 60), 30, 0.9), face((100, 10, 150, 60), 30, 0.1)])
    canvas = np.zeros((120, 200, 3), np.uint8)
    out = draw_tracks(canvas, tracks, show_labels=False)
    assert out is canvas
    female, male = np.array((204, 121, 167)), np.array((0, 114, 178))

    def nearest(pixel) -> str:  # edges are anti-aliased: compare with the two colours
        return "female" if np.abs(pixel - female).sum() < np.abs(pixel - male).sum() else "male"

    assert nearest(out[35, 10].astype(int)) == "female"  # left edge of the female box
    assert out[35, 150].any() and nearest(out[35, 150].astype(int)) == "male"  # right edge of the male box
    assert not out[35, 30:50].any()  # the inside stays untouched


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError):
        FaceTracker(alpha=0.0)
    with pytest.raises(ValueError):
        FaceTracker(velocity_alpha=1.5)
