"""The age-check decision ("is this person at least t?"): pass, or ask for ID — one rule for the library, the
``agegender check`` command, the app's age-check page and the policy measurements.

Rule (a buffer policy, like "Challenge 25" in UK retail): **pass** only if both hold, otherwise **ask for ID**:

1. the estimated (expected) age is at least ``t + buffer``: a photo-based estimate is off by years, and it
   overestimates young faces (regression to the mean), so it has to clear the threshold by a margin;
2. the lower end of the calibrated 80 % interval is at least ``t`` (the model gives at most about 10 % that the
   person is younger than ``t``).

The default buffers are not guesses: :data:`DEFAULT_BUFFERS` holds, per threshold, the smallest buffer that kept
the false-pass rate of people 1-5 years under ``t`` at or below 1 % on the validation splits (UTKFace val
crops + All-Age-Faces val photos, bundled EfficientNet-Lite0, calibrated). At t = 18 no buffer up to 20 met
that bar (2 of 95 teenagers 13-17 still pass at every buffer from 15 to 20), so 18's default is the smallest buffer
with the fewest false passes. ``reports/age-assurance-efficientnet_lite0/`` has the measurement and the test-split table;
``tests/test_model_card.py`` checks code, reports and MODEL_CARD.md agree.

**Second opinions** (:mod:`agegender.assurance.consensus`): a Face can carry the estimates of other bundled models for the
same crop (``Face.second_opinions``). Then the check passes only if *every* model passes under its own buffer
(chosen jointly on validation, in each Face's ``validated_buffers``): one model's outlier (a 15-year-old it reads as
30) is stopped by the other. An explicit ``buffer`` is the first model's; the others keep their validated
difference from it, so one number still moves the whole policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import math
from typing import Any, Mapping, Protocol, Sequence

import numpy as np


class Face(Protocol):
    """What the check reads of an :class:`agegender.Face` (a Protocol, so this module and ``face.py``, which
    calls :func:`check` from ``Face.age_check``, do not import each other)."""

    age: float
    age_low: float
    age_high: float
    calibrated: bool
    model: str | None
    validated_buffers: dict[int, int] | None
    second_opinions: Sequence["Face"]

    def p_at_least(self, threshold: float) -> float: ...

# threshold -> buffer (years), chosen on validation for the bundled default model (see the module docstring); keep
# in step with reports/age-assurance-efficientnet_lite0/choice.json. Each bundled model's own validated buffers
# travel in its manifest entry (``"age_check"``, written by ``python -m agegender.evaluation.assurance install``)
# and reach a Face as ``Face.validated_buffers``; these are the fallback for a model without its own.
DEFAULT_BUFFERS: dict[int, int] = {18: 15, 21: 14, 25: 12}
DEFAULT_THRESHOLD = 18
EXIT_PASS, EXIT_ASK_FOR_ID = 0, 3


def default_buffer(threshold: float, buffers: Mapping[int, int] | None = None) -> int:
    """The validated buffer for ``threshold`` in ``buffers`` (a model's own, e.g. ``Estimator.validated_buffers``;
    ``None``: :data:`DEFAULT_BUFFERS`); for a threshold that was not measured, the largest validated one (a careful
    default: the measured ones only vouch for themselves)."""
    table = buffers or DEFAULT_BUFFERS
    return int(table.get(int(threshold), max(table.values())))


def member_buffer(own: Mapping[int, int] | None, primary: Mapping[int, int] | None, threshold: int,
                  buffer: int | None) -> int:
    """The buffer one model of a panel is checked with: its validated one (``own``), shifted by what an explicit
    ``buffer`` moves the primary model's (``primary``) by, never below 0."""
    mine = default_buffer(threshold, own)
    if buffer is None:
        return mine
    return max(0, mine + int(buffer) - default_buffer(threshold, primary))


def buffers_of(entry: Mapping[str, Any] | None) -> dict[int, int] | None:
    """The validated buffers in a manifest entry's ``"age_check"`` (``{"buffers": {"18": 16, ...}}``), or None."""
    raw = ((entry or {}).get("age_check") or {}).get("buffers") or {}
    out = {int(t): int(b) for t, b in raw.items() if b is not None}
    return out or None


def passes(age: np.ndarray | float, age_low: np.ndarray | float, threshold: float, buffer: float
           ) -> np.ndarray | bool:
    """The rule on arrays (or scalars): expected age >= t + buffer and interval low end >= t."""
    out = (np.asarray(age) >= threshold + buffer) & (np.asarray(age_low) >= threshold)
    return bool(out) if np.ndim(out) == 0 else out


def whole_years(age: float) -> int:
    """An age in whole years as every message shows it: rounded half up from 2 decimals (the precision of the
    JSON records), so the CLI's text, built from a record, says the same number as the reason built from the
    face."""
    return int(math.floor(round(float(age), 2) + 0.5))


@dataclass(frozen=True)
class AgeDecision:
    """The outcome for one face: ``passed`` (else ask for ID), the numbers behind it, and the reason in words."""

    passed: bool
    threshold: int
    buffer: int
    p_at_least: float
    age: float
    age_low: float
    age_high: float
    calibrated: bool
    reason: str
    model: str | None = None
    opinions: tuple["AgeDecision", ...] = ()  # every model's own decision when several had to agree

    @property
    def decision(self) -> str:
        return "pass" if self.passed else "ask_for_id"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decision"] = self.decision
        for key in ("p_at_least", "age", "age_low", "age_high"):
            out[key] = round(float(out[key]), 4 if key == "p_at_least" else 2)
        out["opinions"] = [o.to_dict() for o in self.opinions]
        return out


def check(face: "Face", threshold: int = DEFAULT_THRESHOLD, buffer: int | None = None) -> AgeDecision:
    """Decide for one :class:`~agegender.Face` (``buffer=None``: the buffer validated for its model, else
    :data:`DEFAULT_BUFFERS`); with second opinions, every model must pass (see the module docstring)."""
    if buffer is not None and buffer < 0:
        raise ValueError(f"buffer must be >= 0 years, not {buffer}")
    panel = (face, *getattr(face, "second_opinions", ()))
    if len(panel) == 1:
        return _check_one(face, threshold, buffer)
    primary = getattr(face, "validated_buffers", None)
    opinions = tuple(_check_one(m, threshold, member_buffer(getattr(m, "validated_buffers", None), primary,
                                                           threshold, buffer)) for m in panel)
    refusals = [o for o in opinions if not o.passed]
    if refusals:
        # the numbers shown are those of the model that asked for ID (the lowest estimate among them)
        lead = min(refusals, key=lambda o: o.age)
        reason = f"{lead.model or 'a model'}: {lead.reason}"
    else:
        lead = min(opinions, key=lambda o: o.age)
        reason = f"all {len(opinions)} models pass ({'; '.join(f'{o.model}: {whole_years(o.age)}' for o in opinions)})"
    return AgeDecision(not refusals, int(threshold), opinions[0].buffer, lead.p_at_least, lead.age, lead.age_low,
                       lead.age_high, all(o.calibrated for o in opinions), reason, lead.model, opinions)


def _check_one(face: "Face", threshold: int, buffer: int | None) -> AgeDecision:
    if buffer is None:
        buffer = default_buffer(threshold, getattr(face, "validated_buffers", None))
    if buffer < 0:
        raise ValueError(f"buffer must be >= 0 years, not {buffer}")
    need = threshold + buffer
    point_ok = face.age >= need
    low_ok = face.age_low >= threshold
    if point_ok and low_ok:
        reason = (f"estimated {whole_years(face.age)} ≥ {need} and the interval starts at "
                  f"{whole_years(face.age_low)} ≥ {threshold}")
    elif not point_ok:
        reason = f"estimated {whole_years(face.age)} is under {threshold} + {buffer} = {need}"
    else:
        reason = f"the interval starts at {whole_years(face.age_low)}, under {threshold}: too uncertain"
    return AgeDecision(bool(point_ok and low_ok), int(threshold), int(buffer), face.p_at_least(threshold),
                       float(face.age), float(face.age_low), float(face.age_high),
                       bool(getattr(face, "calibrated", False)), reason, getattr(face, "model", None))


def summary(decisions: list[AgeDecision]) -> str:
    """"2 of 6 need ID" (or "all 6 pass" / "no face"), for a group photo."""
    if not decisions:
        return "no face"
    ask = sum(not d.passed for d in decisions)
    if ask == 0:
        return f"all {len(decisions)} pass" if len(decisions) > 1 else "1 of 1 passes"
    return f"{ask} of {len(decisions)} need{'s' if ask == 1 else ''} ID"
