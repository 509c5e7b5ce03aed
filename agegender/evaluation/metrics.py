"""Every accuracy number of an evaluation report, from labels and a model's raw outputs: pure numpy on arrays,
so other models (the peer benchmark) are scored identically (:func:`compute_metrics`)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from agegender.groups import ADULT_AGE, NUM_AGE_BINS, expected_age, get_preset, p_at_least
from agegender.evaluation.calibration import reliability
from agegender.evaluation.intervals import headline_intervals

DEFAULT_PRESETS = ("fairface9", "life4", "bins10", "adience8")
CALIBRATION_BINS = 10
RACE_NAMES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Other", -1: "unknown"}


class NothingToEvaluate(ValueError):
    """No labelled image could be evaluated (none given, or no face found in any of them)."""


def _num(value: float | None, digits: int = 6) -> float | None:
    """A JSON-safe float: rounded, and ``None`` instead of NaN/inf (empty denominators)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _rate(hits: int, total: int) -> float | None:
    return _num(hits / total) if total else None


def _age_errors(err: np.ndarray) -> dict[str, float | None]:
    abs_err = np.abs(err)
    return {
        "mae": _num(abs_err.mean()),
        "rmse": _num(math.sqrt(float((err ** 2).mean()))),
        "bias": _num(err.mean()),  # mean(predicted - true): < 0 means ages are underestimated
        "within_2": _num((abs_err <= 2).mean()),
        "within_5": _num((abs_err <= 5).mean()),
    }


def _slice(err: np.ndarray, gender_ok: np.ndarray) -> dict[str, Any]:
    errors = _age_errors(err)
    return {"n": int(len(err)), "mae": errors["mae"], "bias": errors["bias"], "within_5": errors["within_5"],
            "gender_accuracy": _num(gender_ok.mean())}


def _slices(keys: np.ndarray, names: dict[int, str], err: np.ndarray, gender_ok: np.ndarray) -> dict[str, Any]:
    """Per-slice errors in the order of ``names``; slices without samples are left out."""
    return {name: _slice(err[keys == key], gender_ok[keys == key]) for key, name in names.items()
            if np.any(keys == key)}


def _over_18(true_age: np.ndarray, p_adult: np.ndarray) -> dict[str, Any]:
    adult, said_adult = true_age >= ADULT_AGE, p_adult >= 0.5
    minors, adults = int((~adult).sum()), int(adult.sum())
    false_adults, false_minors = int((said_adult & ~adult).sum()), int((~said_adult & adult).sum())
    return {
        "accuracy": _num((said_adult == adult).mean()),
        "false_adult_rate": _rate(false_adults, minors),
        "false_minor_rate": _rate(false_minors, adults),
        "minors": minors, "adults": adults, "false_adults": false_adults, "false_minors": false_minors,
    }


def _groups(true_age: np.ndarray, age_probs: np.ndarray, preset_name: str) -> dict[str, Any]:
    preset = get_preset(preset_name)
    predicted = (age_probs @ preset.matrix).argmax(axis=1)
    true = np.asarray(preset.bins)[np.clip(true_age, 0, NUM_AGE_BINS - 1)]
    confusion = np.zeros((len(preset.labels), len(preset.labels)), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    return {
        "labels": list(preset.labels),
        "accuracy": _num((predicted == true).mean()),
        "one_off_accuracy": _num((np.abs(predicted - true) <= 1).mean()),
        "confusion": confusion.tolist(),  # rows: true group, columns: predicted group
    }


def _calibration(p: np.ndarray, outcome: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Expected calibration error of P(age >= 18) over equal-width bins, with the reliability table behind it."""
    return {"target": f"P(age >= {ADULT_AGE})", **reliability(p, outcome, bins)}


def compute_metrics(
    true_age: Sequence[int] | np.ndarray,
    true_gender: Sequence[int] | np.ndarray,
    age_probs: np.ndarray,
    p_female: Sequence[float] | np.ndarray,
    race: Sequence[int] | np.ndarray | None = None,
    presets: Sequence[str] = DEFAULT_PRESETS,
) -> dict[str, Any]:
    """Every accuracy number of a report, from labels and the model's raw outputs.

    ``age_probs`` is (N, 101); the point age is its expectation and "adult" means P(age ≥ 18) ≥ 0.5, exactly
    as the app decides. True ages above 100 are kept as labelled (the model cannot say more than 100, and that
    error is real); for age groups they fall into the oldest group. ``gender`` is 0 male / 1 female, ``race``
    UTKFace's 0-4 or -1 (the race slices are left out when no race is known). The result holds plain ints,
    floats, lists and ``None`` (never NaN), so it goes straight into JSON. ``intervals`` holds the 95 %
    confidence intervals of the headline numbers (:mod:`agegender.evaluation.intervals`).
    """
    age = np.asarray(true_age, dtype=np.int64).reshape(-1)
    gender = np.asarray(true_gender, dtype=np.int64).reshape(-1)
    probs = np.asarray(age_probs, dtype=np.float64)
    p_fem = np.asarray(p_female, dtype=np.float64).reshape(-1)
    n = len(age)
    if n == 0:
        raise NothingToEvaluate("no predictions to score")
    races = np.full(n, -1, dtype=np.int64) if race is None else np.asarray(race, dtype=np.int64).reshape(-1)
    if probs.shape != (n, NUM_AGE_BINS) or gender.shape != (n,) or p_fem.shape != (n,) or races.shape != (n,):
        raise ValueError(f"shapes disagree: {n} ages, {gender.shape} genders, {probs.shape} age_probs "
                         f"(expected ({n}, {NUM_AGE_BINS})), {p_fem.shape} p_female, {races.shape} races")
    err = np.asarray(expected_age(probs)).reshape(-1) - age
    p_adult = np.asarray(p_at_least(probs, ADULT_AGE)).reshape(-1)
    gender_ok = (p_fem >= 0.5).astype(np.int64) == gender
    decades = np.minimum(age // 10, 9)
    slices = {
        "decade": _slices(decades, {d: f"{10 * d}-{10 * d + 9}" if d < 9 else "90+" for d in range(10)},
                          err, gender_ok),
        "gender": _slices(gender, {0: "male", 1: "female"}, err, gender_ok),
    }
    adult_ok = (p_adult >= 0.5) == (age >= ADULT_AGE)
    if np.any(races >= 0):
        slices["race"] = _slices(races, {k: RACE_NAMES[k] for k in (0, 1, 2, 3, 4, -1)}, err, gender_ok)
    return {
        "n": int(n),
        **_age_errors(err),
        "over_18": _over_18(age, p_adult),
        "gender_accuracy": _num(gender_ok.mean()),
        "groups": {name: _groups(age, probs, name) for name in presets},
        "calibration": _calibration(p_adult, (age >= ADULT_AGE).astype(np.float64)),
        "slices": slices,
        "intervals": headline_intervals(err, gender_ok, adult_ok),
    }

