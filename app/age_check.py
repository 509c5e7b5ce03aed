"""The age-check policy of ``pages/3_Age_check.py``, moved unchanged from the former ``ui.py`` (the decision is
to move into the library, where the CLI can use it too)."""

from __future__ import annotations

from dataclasses import dataclass

from agegender import Face


@dataclass(frozen=True)
class AgeDecision:
    """The age-check outcome for one face under the buffer policy (see :func:`age_check`)."""

    passed: bool
    threshold: int
    buffer: int
    p_at_least: float
    reason: str


def age_check(face: Face, threshold: int, buffer: int) -> AgeDecision:
    """Pass only if BOTH hold, otherwise ask for ID:

    1. the expected age is at least ``threshold + buffer`` (the "Challenge 25" idea: with t = 18 and a 7-year
       buffer, anyone who looks under 25 is asked), and
    2. the lower end of the 80 % interval is at least ``threshold``: the model itself gives at most a 10 %
       chance that the person is younger than the threshold.
    """
    need = threshold + buffer
    p = face.p_at_least(threshold)
    point_ok = face.age >= need
    low_ok = face.age_low >= threshold
    if point_ok and low_ok:
        reason = f"estimated {face.age:.0f} ≥ {need} and the interval starts at {face.age_low:.0f} ≥ {threshold}"
    elif not point_ok:
        reason = f"estimated {face.age:.0f} is under {threshold} + {buffer} = {need}"
    else:
        reason = f"the interval starts at {face.age_low:.0f}, under {threshold}: too uncertain"
    return AgeDecision(point_ok and low_ok, int(threshold), int(buffer), p, reason)
