"""Which test-time views of a face the network runs, and how their outputs are combined.

Every face is run as the calibrated crop and its mirror (``flip_tta``; on the validation splits the mirror lowered
the MAE of an earlier bundled EfficientNet-Lite0 by 0.07 years on UTKFace and 0.10 on All-Age-Faces). Scale TTA adds
the crop zoomed in and out by 10 % (:data:`SCALE_TTA_CONTEXTS`, each mirrored too): on validation it is worth about
0.06 years of MAE, for three times the network time. Most of that gain comes from the faces the network is unsure
of, so a model's manifest entry may carry a *view policy* chosen on validation (``python -m
agegender.evaluation.tta_views``, issue 30):

``{"test_time_views": {"scale_views": "adaptive", "trigger_std_years": 6.0, ...}}``: run the two flip views first,
and the four scale views only for faces whose flip-averaged age distribution is wider than ``trigger_std_years``
(standard deviation, uncalibrated). Such a face gets exactly the average of all six views, the others the flip
average. For the bundled EfficientNet-Lite0 this kept the pooled validation MAE within 0.02 years of all six views
on clean and on degraded faces, with about a third fewer network passes. A model without a policy runs every view.

``"trigger_gender_margin": m`` also sends a face to the scale views when its flip-averaged P(female) is within ``m``
of 0.5. Why: the std trigger looks at age only, and the faces whose gender is a coin toss are often sure of their age,
so they lost the scale views' say on gender. Validation chooses ``m`` like the std (0 or absent: age only).

``"outer_views": "alternate"`` halves what an unsure face costs: of the four scale views it runs the tighter crop as
it is and the looser one mirrored (both framings and both orientations still appear once), weighted as the four
would be (the mirror pair once, the outer views twice). Validation, not symmetry, decides whether that is enough
(docs/performance.md, *Which test-time views earn their cost*); without ``flip_tta`` there are no mirrors to skip.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Mapping

import numpy as np

from agegender.groups import AGES

SCALE_TTA_CONTEXTS = (0.9, 1.0, 1.1)  # the calibrated crop zoomed in 10 %, as is, zoomed out 10 %
ScaleTTA = bool | Literal["all", "validated"]
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


VIEW_SETS: dict[str, dict[str, Any]] = {
    "validated": {"flip_tta": True, "scale_tta": True},  # the mirror + the model's validated scale views
    "alternate": {"flip_tta": True, "scale_tta": True, "outer_views": "alternate"},
    "mirror": {"flip_tta": True, "scale_tta": False},
    "scales": {"flip_tta": False, "scale_tta": True},
    "single": {"flip_tta": False, "scale_tta": False},
}
"""Named sets of test-time views, as ``Estimator`` switches. A measurement made with one set (an evaluation report,
the two-model age check's validated buffers) names it, so that what runs later can be held to what was measured.
``"alternate"`` is the model's validated trigger with the two alternate scale views whatever its policy says: an
age-only second opinion (the age check's) may be validated that way, since the views it drops were kept for gender."""


def view_set_name(flip_tta: bool, scale_tta: bool, outer_views: str | None = None) -> str:
    """The :data:`VIEW_SETS` name of these ``Estimator`` switches (``outer_views``: an override of the model's
    policy, None where it follows it)."""
    wanted: dict[str, Any] = {"flip_tta": bool(flip_tta), "scale_tta": bool(scale_tta)}
    if outer_views == "alternate" and flip_tta and scale_tta:
        wanted["outer_views"] = "alternate"
    return next(name for name, s in VIEW_SETS.items() if s == wanted)


def view_policy(entry: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A manifest entry's ``"test_time_views"`` ({} where it has none)."""
    return (entry or {}).get("test_time_views") or {}


def scale_trigger(entry: Mapping[str, Any] | None) -> float | None:
    """The validated trigger (years of age-distribution std) in a manifest entry: None where the entry has no
    policy or says ``"all"`` (every view), infinity where it says ``"none"`` (validation found them worthless)."""
    policy = view_policy(entry)
    kind = policy.get("scale_views", "all")
    if kind == "none":
        return math.inf
    if kind == "adaptive":
        return float(policy["trigger_std_years"])
    if kind != "all":
        raise ValueError(f"unknown test_time_views policy {kind!r}")
    return None


def gender_margin(entry: Mapping[str, Any] | None) -> float:
    """The validated gender trigger of an adaptive policy: the scale views also run for faces whose P(female) is
    within this margin of 0.5 (0 where the policy has none)."""
    policy = view_policy(entry)
    margin = float(policy.get("trigger_gender_margin", 0.0)) if policy.get("scale_views") == "adaptive" else 0.0
    if not 0.0 <= margin <= 0.5:
        raise ValueError(f"trigger_gender_margin must lie in [0, 0.5], not {margin}")
    return margin


def unsure(age_probs: np.ndarray, p_female: np.ndarray, trigger: float, margin: float = 0.0) -> np.ndarray:
    """Indices of the faces an adaptive policy gives the scale views: an age distribution wider than ``trigger``
    years, or a P(female) within ``margin`` of 0.5."""
    return np.flatnonzero((distribution_std(age_probs) > trigger) | (np.abs(p_female - 0.5) < margin))


OUTER_VIEWS = ("all", "alternate")


def outer_views(entry: Mapping[str, Any] | None) -> str:
    """Which scale views an unsure face gets under the entry's policy: ``"all"`` four, ``"alternate"`` two."""
    kind = view_policy(entry).get("outer_views", "all")
    if kind not in OUTER_VIEWS:
        raise ValueError(f"unknown outer_views {kind!r} (one of {', '.join(OUTER_VIEWS)})")
    return kind


def resolve(scale_tta: ScaleTTA, trigger: float | None) -> float | None:
    """The trigger to use for a call: 0 = every scale view, None = none, else the validated threshold.

    ``True``/``"validated"`` (the default) follows the model's policy; ``"all"`` always runs the scale views (the
    measurement behind the policy); ``False`` never does (the live camera)."""
    if scale_tta is False:
        return None
    if scale_tta == "all" or trigger is None:
        return 0.0
    return None if math.isinf(trigger) else trigger


def distribution_std(age_probs: np.ndarray) -> np.ndarray:
    """Standard deviation in years of each row's age distribution: how unsure the network is of one face."""
    mean = age_probs @ AGES
    return np.sqrt(np.maximum(age_probs @ AGES**2 - mean**2, 0.0))


def combine(run: Runner, views: np.ndarray, trigger: float | None,
            margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(age_probs, p_female) of N faces from their (N, 3, S, S, 3) views (the three scale contexts) or (N, 1, ...).

    ``run`` maps (M, S, S, 3) crops to averaged outputs (mirrors included), e.g. ``Estimator.predict_batch``.
    ``trigger`` from :func:`resolve`: None runs the middle view only, 0 every view in one go, else the middle view
    first and the other two for the faces :func:`unsure` picks (``margin``: its gender trigger)."""
    if views.shape[1] == 1:
        return run(views[:, 0])
    return combine_lazy(run, views[:, views.shape[1] // 2], trigger, lambda faces: views[faces][:, [0, -1]],
                        margin=margin)


def combine_lazy(run: Runner, middle: np.ndarray, trigger: float | None,
                 outer: Callable[[np.ndarray], np.ndarray],
                 run_outer: Runner | None = None, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`combine` for faces whose outer framings are cropped only when needed: ``middle`` is (N, S, S, 3), and
    ``outer(faces)`` returns the (len(faces), 2, S, S, 3) tighter and looser crops of the faces at those indices.
    ``run_outer`` (a runner that adds no mirrors) asks for the ``"alternate"`` views of the faces over the trigger:
    the tighter crop as it is and the looser one mirrored. ``margin``: the policy's gender trigger (:func:`unsure`).

    Why lazily: with the adaptive policy most faces never need their outer framings, and cropping them (two
    warps per face) was wasted work on every photo."""
    if trigger is None:
        return run(middle)
    if trigger <= 0:
        both = outer(np.arange(len(middle)))
        return run(np.stack([both[:, 0], middle, both[:, 1]], axis=1))
    age_probs, p_female = run(middle)
    more = unsure(age_probs, p_female, trigger, margin)
    if len(more):
        crops = outer(more)
        if run_outer is not None:
            crops = np.stack([crops[:, 0], crops[:, 1, :, ::-1]], axis=1)
        age_outer, female_outer = (run_outer or run)(crops)
        # the same weights as averaging all views: the middle counts once, the two outer views twice
        age_probs[more] = (age_probs[more] + 2 * age_outer) / 3
        p_female[more] = (p_female[more] + 2 * female_outer) / 3
    return age_probs, p_female
