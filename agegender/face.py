"""The per-face result object returned by :class:`agegender.Estimator`, and its assembly from the model's outputs."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from agegender.groups import GroupPreset, age_interval, expected_age
from agegender.groups import p_at_least as _p_at_least

if TYPE_CHECKING:
    from agegender.assurance.age_check import AgeDecision
    from agegender.detection.boxes import Detection


@dataclass
class Face:
    """One face: where it is, and what the model thinks of its age and gender.

    ``age`` is the expected value of the age distribution ``age_probs`` (101 one-year bins, the last = 100+);
    ``age_low``/``age_high`` bound its 80 % interval (widened to contain ``age`` when the distribution is skewed);
    ``groups`` sums the bins into the chosen preset's groups. ``calibrated`` says whether ``age_probs`` and the
    interval went through the model's validated calibration (:mod:`agegender.assurance.calibration`): then the interval
    covered 80 % of the validation faces of every true-age decade and P(age ≥ t) was tempered to match the
    observed frequencies; uncalibrated (untrained or custom weights) they are the network's raw numbers.
    """

    box: tuple[int, int, int, int]
    score: float
    keypoints: np.ndarray
    age: float
    age_low: float
    age_high: float
    age_probs: np.ndarray
    groups: "OrderedDict[str, float]"
    gender: str
    p_female: float
    index: int = 0
    crop: np.ndarray | None = field(default=None, repr=False)  # the exact model input (RGB uint8), for display
    calibrated: bool = False
    # the age-check buffers validated for the model and calibration that made this face (None: the defaults)
    validated_buffers: "dict[int, int] | None" = field(default=None, repr=False, compare=False)
    model: str | None = field(default=None, compare=False)  # the backbone that made this estimate
    # the same crop as other bundled models saw it (agegender.assurance.consensus): the age check then needs all to pass
    second_opinions: "tuple[Face, ...]" = field(default=(), repr=False, compare=False)

    def age_check(self, threshold: int = 18, buffer: int | None = None) -> "AgeDecision":
        """Pass or ask for ID under the buffer policy of :mod:`agegender.assurance.age_check` (``buffer=None``: the
        buffer validated for ``threshold`` and this face's model; with :attr:`second_opinions`, every model
        must pass)."""
        from agegender.assurance.age_check import check

        return check(self, threshold, buffer)

    def p_at_least(self, threshold: float) -> float:
        """P(age ≥ threshold) from the full distribution (not from the point estimate)."""
        return float(_p_at_least(self.age_probs, threshold))

    @property
    def gender_confidence(self) -> float:
        return float(max(self.p_female, 1.0 - self.p_female))

    @property
    def top_group(self) -> tuple[str, float]:
        label = max(self.groups, key=self.groups.get)
        return label, float(self.groups[label])

    def to_dict(self, include_age_probs: bool = False) -> dict[str, Any]:
        """JSON-safe dict (plain ints, floats, lists, strings)."""
        out: dict[str, Any] = {
            "index": int(self.index),
            "box": [int(v) for v in self.box],
            "score": round(float(self.score), 4),
            "keypoints": [[round(float(x), 1), round(float(y), 1)] for x, y in np.asarray(self.keypoints)],
            "age": round(float(self.age), 2),
            "age_low": float(self.age_low),
            "age_high": float(self.age_high),
            "age_group": self.top_group[0],
            "groups": {k: round(float(v), 4) for k, v in self.groups.items()},
            "gender": self.gender,
            "p_female": round(float(self.p_female), 4),
            "gender_confidence": round(self.gender_confidence, 4),
            "p_adult": round(self.p_at_least(18), 4),
        }
        if include_age_probs:
            out["age_probs"] = [round(float(p), 6) for p in self.age_probs]
        return out


def faces_from_outputs(detections: "Sequence[Detection]", age_probs: np.ndarray, p_female: np.ndarray,
                       preset: GroupPreset, intervals: tuple[np.ndarray, np.ndarray] | None = None,
                       crops: Sequence[np.ndarray] | None = None, **common: Any) -> list[Face]:
    """One :class:`Face` per detection from the (possibly calibrated) age distributions and P(female).

    ``intervals`` are the calibrated 80 % bounds where the model has a calibration (the conformal interval fitted
    on validation, :mod:`agegender.assurance.calibration`), else each distribution's own central 80 %. ``common``
    holds the fields every face of the call shares (``calibrated``, ``validated_buffers``, ``model``)."""
    ages = expected_age(age_probs)
    group_values = age_probs @ preset.matrix
    faces = []
    for i, det in enumerate(detections):
        if intervals is not None:
            low, high = float(intervals[0][i]), float(intervals[1][i])
        else:
            low, high = age_interval(age_probs[i], 0.8)
        # The mean of a skewed or two-peaked distribution can lie outside its central 80 % (e.g. 95 % at 28 and
        # 5 % at 100: mean 31.6, interval 28-28); widen the interval to contain the reported age.
        low, high = min(low, float(math.floor(ages[i] + 1e-6))), max(high, float(math.ceil(ages[i] - 1e-6)))
        faces.append(Face(
            box=tuple(int(round(v)) for v in det.box), score=float(det.score),
            keypoints=np.asarray(det.keypoints, dtype=np.float32),
            age=float(ages[i]), age_low=low, age_high=high, age_probs=age_probs[i],
            groups=OrderedDict(zip(preset.labels, map(float, group_values[i]))),
            gender="female" if p_female[i] >= 0.5 else "male", p_female=float(p_female[i]),
            index=i + 1, crop=None if crops is None else crops[i], **common))
    return faces
