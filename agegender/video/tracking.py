"""Follow faces across the frames of a stream (live camera, video file): IoU matching, smoothed labels, motion.

Why a tracker: a per-frame model estimate jitters by several years from one frame to the next, so raw labels
flicker. Matching faces across frames by box overlap (IoU) and smoothing each track's age distribution and
P(female) with an exponential moving average gives stable labels, and a frame count shows how much evidence a
label rests on.

Why motion: the model cannot run on every frame of a video on a CPU, so the frames in between show the boxes of
the last analysis. A face that moves would leave its box behind; each track therefore keeps a smoothed
constant velocity of its box corners and :meth:`FaceTracker.predict` extrapolates the box to the time of the
frame being drawn (capped at ``max_extrapolation`` so a lost face does not drift across the picture). Matching
also uses the extrapolated boxes, so a fast face is still matched to its own track; a face that moved further
than its box overlaps (a sparse analysis of a quick pan) is matched in a second pass to the nearest unmatched
track of similar size within ``max_center_shift`` box sides.

Frames of another size (the camera switched resolution, another video) make every box meaningless: the tracks
are dropped when the frame size changes. Nothing here imports Streamlit; the live page and the video pipeline
share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from agegender.annotate import FEMALE_RGB, MALE_RGB
from agegender.detection.detector import box_iou
from agegender.face import Face
from agegender.groups import age_interval, expected_age

Box = tuple[float, float, float, float]


@dataclass
class Track:
    """One face followed across frames; ``age_probs``/``p_female`` are EMA-smoothed model outputs.

    ``box`` is where the face was at time ``t`` (its last match); ``velocity`` is the smoothed change of the four
    box coordinates per time unit (zero until the second match). ``last_age_probs``/``last_p_female`` are the
    newest raw (unsmoothed) estimate, for summaries that want their own statistics (video files).
    """

    track_id: int
    box: Box
    age_probs: np.ndarray
    p_female: float
    t: float = 0.0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    hits: int = 1  # frames in which the model saw this face
    missed: int = 0  # consecutive processed frames without a match
    last_age_probs: np.ndarray | None = field(default=None, repr=False)
    last_p_female: float = 0.5

    @property
    def age(self) -> float:
        return float(expected_age(self.age_probs))

    @property
    def interval(self) -> tuple[float, float]:
        return age_interval(self.age_probs, 0.8)

    @property
    def gender(self) -> str:
        return "female" if self.p_female >= 0.5 else "male"

    def label(self) -> str:
        """Short on-video label: id, gender initial, smoothed age and how many frames it rests on."""
        return f"#{self.track_id} {self.gender[0].upper()} {self.age:.0f} ({self.hits}f)"

    def box_at(self, t: float, max_extrapolation: float) -> Box:
        """The box extrapolated with constant velocity to time ``t`` (at most ``max_extrapolation`` ahead)."""
        dt = min(max(float(t) - self.t, 0.0), max_extrapolation)
        return tuple(float(v) for v in np.asarray(self.box) + self.velocity * dt)  # type: ignore[return-value]


class FaceTracker:
    """Greedy IoU matching of new detections to existing tracks, with EMA smoothing of their estimates.

    ``alpha`` is the weight of the newest frame (0.3: a label settles within ~5 processed frames yet follows a
    new person quickly). A track survives ``max_missed`` processed frames without a match so a blink of the
    detector does not reset its history. ``velocity_alpha`` smooths the box velocity (detections jitter by a few
    pixels); ``max_extrapolation`` (in the time unit of ``t``, seconds for the app) caps how far a box is moved
    ahead of its last match. ``t`` defaults to the number of updates, so callers without clocks still get motion.
    """

    def __init__(self, iou_threshold: float = 0.3, alpha: float = 0.3, max_missed: int = 5,
                 velocity_alpha: float = 0.5, max_extrapolation: float = 1.0, max_center_shift: float = 1.0):
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must lie in (0, 1]")
        if not 0.0 < velocity_alpha <= 1.0:
            raise ValueError("velocity_alpha must lie in (0, 1]")
        self.iou_threshold = float(iou_threshold)
        self.alpha = float(alpha)
        self.max_missed = int(max_missed)
        self.velocity_alpha = float(velocity_alpha)
        self.max_extrapolation = float(max_extrapolation)
        self.max_center_shift = float(max_center_shift)
        self.tracks: list[Track] = []
        self.frame_size: tuple[int, int] | None = None  # (height, width) of the frames the tracks live in
        self._next_id = 1
        self._steps = 0

    def reset(self) -> None:
        """Forget everything, ids included (a new stream)."""
        self.tracks = []
        self.frame_size = None
        self._next_id = 1
        self._steps = 0

    def drop_tracks(self) -> None:
        """Forget the tracks but keep counting ids, so ids stay unique within one stream or video."""
        self.tracks = []

    def check_frame_size(self, frame_size: tuple[int, int] | None) -> bool:
        """Drop the tracks if frames now have another (height, width); True when that happened."""
        if frame_size is None:
            return False
        size = (int(frame_size[0]), int(frame_size[1]))
        changed = self.frame_size is not None and size != self.frame_size
        if changed:
            self.drop_tracks()
        self.frame_size = size
        return changed

    def update(self, faces: Sequence[Face], t: float | None = None,
               frame_size: tuple[int, int] | None = None) -> list[Track]:
        """Fold one processed frame's faces (seen at time ``t``, in frames of ``frame_size`` = (h, w)) into the
        tracks; returns the tracks seen in this frame, left to right."""
        self._steps += 1
        t = float(self._steps if t is None else t)
        self.check_frame_size(frame_size)
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        predicted = np.array([tr.box_at(t, self.max_extrapolation) for tr in self.tracks],
                             dtype=np.float64).reshape(-1, 4)
        iou = box_iou(boxes, predicted) if len(faces) and self.tracks else np.zeros((len(faces), len(self.tracks)))
        matched_faces: set[int] = set()
        matched_tracks: set[int] = set()
        # Greedy on descending IoU: optimal enough for a handful of faces, and deterministic.
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            fi, ti = np.unravel_index(flat, iou.shape)
            if iou[fi, ti] < self.iou_threshold:
                break
            if fi in matched_faces or ti in matched_tracks:
                continue
            matched_faces.add(int(fi))
            matched_tracks.add(int(ti))
            self._fold(self.tracks[ti], faces[fi], t)
        for fi, ti in self._nearest_pairs(boxes, predicted, matched_faces, matched_tracks):
            matched_faces.add(fi)
            matched_tracks.add(ti)
            self._fold(self.tracks[ti], faces[fi], t)
        seen = [self.tracks[i] for i in sorted(matched_tracks)]
        for i, track in enumerate(self.tracks):
            if i not in matched_tracks:
                track.missed += 1
        for fi, face in enumerate(faces):
            if fi not in matched_faces:
                probs = np.asarray(face.age_probs, dtype=np.float64)
                track = Track(self._next_id, tuple(float(v) for v in face.box), probs.copy(), float(face.p_female),
                              t=t, last_age_probs=probs.copy(), last_p_female=float(face.p_female))
                self._next_id += 1
                self.tracks.append(track)
                seen.append(track)
        self.tracks = [tr for tr in self.tracks if tr.missed <= self.max_missed]
        return sorted(seen, key=lambda tr: tr.box[0])

    def _nearest_pairs(self, boxes: np.ndarray, predicted: np.ndarray, used_faces: set[int],
                       used_tracks: set[int]) -> list[tuple[int, int]]:
        """Greedy pairs of unmatched faces and tracks whose centres lie within ``max_center_shift`` box sides
        and whose sizes differ by less than a factor of 2 (a face does not double in one step)."""
        faces = [i for i in range(len(boxes)) if i not in used_faces]
        tracks = [j for j in range(len(predicted)) if j not in used_tracks]
        if not faces or not tracks or self.max_center_shift <= 0:
            return []
        fb, tb = boxes[faces], predicted[tracks]
        f_side = np.sqrt(np.prod(np.maximum(fb[:, 2:] - fb[:, :2], 1e-6), axis=1))
        t_side = np.sqrt(np.prod(np.maximum(tb[:, 2:] - tb[:, :2], 1e-6), axis=1))
        f_centre, t_centre = (fb[:, :2] + fb[:, 2:]) / 2, (tb[:, :2] + tb[:, 2:]) / 2
        shift = np.linalg.norm(f_centre[:, None] - t_centre[None], axis=2) / np.maximum(f_side[:, None], t_side[None])
        ratio = np.maximum(f_side[:, None], t_side[None]) / np.minimum(f_side[:, None], t_side[None])
        shift = np.where(ratio < 2.0, shift, np.inf)
        pairs, taken_f, taken_t = [], set(), set()
        for flat in np.argsort(shift, axis=None, kind="stable"):
            a, b = np.unravel_index(flat, shift.shape)
            if shift[a, b] > self.max_center_shift:
                break
            if a in taken_f or b in taken_t:
                continue
            taken_f.add(a)
            taken_t.add(b)
            pairs.append((faces[a], tracks[b]))
        return pairs

    def predict(self, tracks: Sequence[Track], t: float) -> list[Track]:
        """Copies of ``tracks`` whose boxes are extrapolated to time ``t``, for drawing a frame that was not
        analysed (the tracks themselves keep their measured boxes)."""
        out = []
        for tr in tracks:
            moved = Track(tr.track_id, tr.box_at(t, self.max_extrapolation), tr.age_probs, tr.p_female, t=t,
                          velocity=tr.velocity, hits=tr.hits, missed=tr.missed)
            out.append(moved)
        return out

    def _fold(self, track: Track, face: Face, t: float) -> None:
        a = self.alpha
        probs = np.asarray(face.age_probs, dtype=np.float64)
        track.age_probs = (1.0 - a) * track.age_probs + a * probs
        track.p_female = (1.0 - a) * track.p_female + a * float(face.p_female)
        new_box = np.asarray(face.box, dtype=np.float64)
        dt = t - track.t
        if dt > 0:
            measured = (new_box - np.asarray(track.box)) / dt
            b = self.velocity_alpha if track.hits > 1 else 1.0  # the first measured velocity is taken as is
            track.velocity = (1.0 - b) * track.velocity + b * measured
        track.box = tuple(float(v) for v in new_box)  # boxes follow the newest frame: no lag in position
        track.t = t
        track.hits += 1
        track.missed = 0
        track.last_age_probs = probs.copy()
        track.last_p_female = float(face.p_female)


def draw_tracks(rgb: np.ndarray, tracks: Sequence[Track], show_labels: bool = True) -> np.ndarray:
    """Boxes and labels of ``tracks`` drawn on ``rgb`` in place (it is a fresh frame buffer); returns it."""
    h, w = rgb.shape[:2]
    thickness = max(1, int(round(max(h, w) / 400)))
    for t in tracks:
        x1, y1, x2, y2 = (int(round(v)) for v in t.box)
        colour = FEMALE_RGB if t.gender == "female" else MALE_RGB
        cv2.rectangle(rgb, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = t.label() if show_labels else f"#{t.track_id}"
        scale = max(0.4, min(1.0, (x2 - x1) / 160))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + 4)
        tx = min(max(0, x1), max(0, w - tw - 2))
        cv2.rectangle(rgb, (tx, ty - th - base), (tx + tw + 2, ty + base // 2), colour, -1)
        cv2.putText(rgb, text, (tx + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return rgb


__all__ = ["FaceTracker", "Track", "draw_tracks"]
