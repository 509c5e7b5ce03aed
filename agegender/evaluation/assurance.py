"""Age assurance measurement: fit the calibration and choose the policy on validation, then measure both once on
test. Inputs are ``agegender evaluate --age-probs`` folders (predictions.csv + age_probs.npz), so the network
runs once per split and every choice here is cheap to redo.

    python -m agegender.evaluation.assurance fit  --val utkface=DIR all_age_faces=DIR --out reports/age-assurance-M
    python -m agegender.evaluation.assurance test --test utkface=DIR all_age_faces=DIR --out reports/age-assurance-M

``fit`` writes ``calibration.json`` (the parameters that go into the model's manifest entry), ``validation.json``
(coverage/ECE before and after, the bias-mapping experiment, the policy table and the chosen buffers) and
``choice.json``. ``test`` reads those (it refits nothing) and writes ``test.json``, ``policy-test.csv`` and the
plots. ``install`` copies ``calibration.json`` and the chosen buffers of ``choice.json`` into the model's entry of
``weights/MANIFEST.json`` (``"calibration"``, ``"age_check"``), where the Face API, the app and the CLI read them:

    python -m agegender.evaluation.assurance install --model M --out reports/age-assurance-M
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.optimize import isotonic_regression

from agegender.assurance.calibration import Calibration, apply_calibration
from agegender.groups import age_interval, expected_age
from agegender.evaluation import calibration as cm
from agegender.evaluation import policy as pm
from agegender.evaluation.install import REPORT_DIR, install

RACE_NAMES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Other"}
GENDER_NAMES = {0: "male", 1: "female"}
MIN_DECADE = 50  # validation faces a decade needs to count in the per-decade bias criterion
CV_FOLDS = 5
LEVEL_FOLDS = 5  # cross-validation folds of the choice of interval levels (choose_levels)


@dataclass
class Split:
    """Labelled raw predictions of one or more datasets, row-aligned."""

    ages: np.ndarray
    gender: np.ndarray
    race: np.ndarray
    dataset: np.ndarray
    probs: np.ndarray

    def __len__(self) -> int:
        return len(self.ages)


def load_predictions(folder: Path, dataset: str) -> Split:
    """The found faces of one ``agegender evaluate --age-probs`` folder."""
    data = np.load(Path(folder) / "age_probs.npz")
    by_file = {str(f): p for f, p in zip(data["files"], data["age_probs"])}
    rows = [r for r in csv.DictReader(open(Path(folder) / "predictions.csv")) if r["detected"] == "True"]
    if len(rows) != len(by_file):
        raise ValueError(f"{folder}: {len(rows)} detected rows but {len(by_file)} distributions")
    return Split(np.array([int(r["age"]) for r in rows]), np.array([int(r["gender"]) for r in rows]),
                 np.array([int(r["race"]) for r in rows]), np.array([dataset] * len(rows)),
                 np.stack([by_file[r["file"]] for r in rows]).astype(np.float64))


def combine(parts: Sequence[Split]) -> Split:
    return Split(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("ages", "gender", "race", "dataset",
                                                                            "probs")))


def raw_interval(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(age, low, high) exactly as the uncalibrated Estimator reported them: whole-year 10th/90th percentiles,
    widened to contain the expected age."""
    ages = np.asarray(expected_age(probs))
    bounds = np.array([age_interval(p, 0.8) for p in probs])
    low = np.minimum(bounds[:, 0], np.floor(ages + 1e-6))
    high = np.maximum(bounds[:, 1], np.ceil(ages - 1e-6))
    return ages, low, high


def outputs(split: Split, params: Calibration | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(probs, age, low, high) as the Estimator reports them, raw (``None``) or calibrated."""
    if params is None:
        age, low, high = raw_interval(split.probs)
        return split.probs, age, low, high
    probs, low, high = apply_calibration(split.probs, params)
    return probs, np.asarray(expected_age(probs)), low, high


def measure(split: Split, params: Calibration | None) -> dict[str, Any]:
    """Coverage per decade, ECE per threshold, NLL, MAE and bias per decade of one split."""
    probs, age, low, high = outputs(split, params)
    err = age - split.ages
    decades = cm.decade_names(split.ages)
    return {"n": len(split), "mae": round(float(np.abs(err).mean()), 4), "nll": round(cm.nll(probs, split.ages), 4),
            "coverage": cm.coverage(split.ages, low, high), "ece": cm.ece_per_threshold(probs, split.ages),
            "bias_by_decade": {d: {"n": int((decades == d).sum()), "bias": round(float(err[decades == d].mean()), 3)}
                               for d in cm.coverage(split.ages, low, high)["decade"]}}


def _decade_bias(err: np.ndarray, ages: np.ndarray) -> float:
    """Mean |bias| over true-age decades with at least :data:`MIN_DECADE` faces."""
    decades = cm.decade_names(ages)
    biases = [abs(err[decades == d].mean()) for d in set(decades) if (decades == d).sum() >= MIN_DECADE]
    return float(np.mean(biases))


def bias_mapping_experiment(split: Split, seed: int = 0) -> dict[str, Any]:
    """Would a monotone mapping of the expected age (isotonic regression of true on predicted age) help?
    Measured by 5-fold cross-validation inside the validation set (fitting and scoring on the same faces would
    flatter it). Kept only if both the MAE and the mean per-decade |bias| improve."""
    pred = np.asarray(expected_age(split.probs))
    mapped = np.empty_like(pred)
    folds = np.random.default_rng(seed).integers(0, CV_FOLDS, len(pred))
    for k in range(CV_FOLDS):
        train, held = folds != k, folds == k
        order = np.argsort(pred[train])
        fit = isotonic_regression(split.ages[train][order].astype(np.float64)).x
        mapped[held] = np.interp(pred[held], pred[train][order], fit)
    before, after = pred - split.ages, mapped - split.ages
    result = {"method": "isotonic regression of true age on expected age, 5-fold CV on validation",
              "mae_before": round(float(np.abs(before).mean()), 4), "mae_after": round(float(np.abs(after).mean()), 4),
              "decade_abs_bias_before": round(_decade_bias(before, split.ages), 4),
              "decade_abs_bias_after": round(_decade_bias(after, split.ages), 4)}
    result["kept"] = bool(result["mae_after"] < result["mae_before"]
                          and result["decade_abs_bias_after"] < result["decade_abs_bias_before"])
    return result


def policy_block(split: Split, params: Calibration | None, buffers: dict[int, int] | None = None
                 ) -> dict[str, Any]:
    """Full policy table; with ``buffers``, also the rows at those buffers per dataset, gender and race."""
    _, age, low, _ = outputs(split, params)
    out: dict[str, Any] = {"table": pm.policy_table(split.ages, age, low)}
    if buffers:
        out["by_dataset"] = pm.sliced_rows(split.ages, age, low, split.dataset,
                                           {d: d for d in dict.fromkeys(split.dataset)}, buffers)
        out["by_gender"] = pm.sliced_rows(split.ages, age, low, split.gender, GENDER_NAMES, buffers)
        out["by_race"] = pm.sliced_rows(split.ages, age, low, split.race, RACE_NAMES, buffers)
    return out


def per_dataset(split: Split, params: Calibration | None) -> dict[str, Any]:
    out = {}
    for name in dict.fromkeys(split.dataset):
        m = split.dataset == name
        out[name] = measure(Split(split.ages[m], split.gender[m], split.race[m], split.dataset[m], split.probs[m]),
                            params)
    return out


def _subset(split: Split, m: np.ndarray) -> Split:
    return Split(split.ages[m], split.gender[m], split.race[m], split.dataset[m], split.probs[m])


def choose_levels(val: Split, fitted_on: str, seed: int = 0, folds: int = LEVEL_FOLDS
                  ) -> tuple[Calibration, dict[str, Any]]:
    """Conformal levels per predicted-age region, the same regions with levels fitted to true-decade coverage,
    or label-conditional conformal levels per true-age region: whichever has the smallest held-out decade
    deviation in ``folds``-fold cross-validation on validation; then refit on all of it. Five folds, not two: a
    fold must keep every region the full fit builds (half of the 196 validation teenagers is under
    ``MIN_REGION``, so 2-fold CV merged their region away). The out-of-fold coverage per decade is reported."""
    fold = np.random.default_rng(seed).integers(0, folds, len(val))
    names = ("conformal", "decade_fit", "label_conditional")
    inside, width = ({k: np.zeros(len(val), dtype) for k in names} for dtype in (bool, float))
    for f in range(folds):
        held = fold == f
        train = _subset(val, ~held)
        conf = cm.fit_calibration(train.probs, train.ages)
        fitted = {"conformal": conf, "decade_fit": cm.fit_levels_for_decades(conf, train.probs, train.ages),
                  "label_conditional": cm.fit_label_conditional(train.probs, train.ages)}
        for name, params in fitted.items():
            _, low, high = apply_calibration(val.probs[held], params)
            inside[name][held] = (low <= val.ages[held]) & (val.ages[held] <= high)
            width[name][held] = high - low
    decade = cm.decade_names(val.ages)
    counted = [d for d in sorted(set(decade), key=lambda s: int(s.split("-")[0].rstrip("+")))
               if (decade == d).sum() >= cm.MIN_REGION]
    by_decade = {k: {d: round(float(inside[k][decade == d].mean()), 4) for d in counted} for k in names}
    summary = {k: round(float(np.sqrt(np.mean([(100 * (c - 0.8)) ** 2 for c in by_decade[k].values()]))), 3)
               for k in names}
    chosen = min(summary, key=summary.get)
    if chosen == "label_conditional":
        params = cm.fit_label_conditional(val.probs, val.ages, fitted_on=fitted_on)
    else:
        params = cm.fit_calibration(val.probs, val.ages, fitted_on=fitted_on)
        if chosen == "decade_fit":
            params = cm.fit_levels_for_decades(params, val.probs, val.ages)
    return params, {"heldout_rms_decade_deviation_points": summary, "chosen": chosen,
                    "heldout_mean_width_years": {k: round(float(width[k].mean()), 3) for k in names},
                    "heldout_coverage_by_decade": by_decade,
                    "method": f"{folds}-fold CV on validation (out-of-fold intervals pooled); RMS over decades "
                              "with >= 100 faces of (coverage - 80 %)"}


def fit(parts: Sequence[Split], model: str) -> dict[str, Any]:
    """Everything chosen on validation."""
    val = combine(parts)
    params, level_choice = choose_levels(val, "+".join(f"{d}:val" for d in dict.fromkeys(val.dataset)))
    policy = policy_block(val, params)
    choice, meets = {}, {}
    for t in pm.THRESHOLDS:
        row, meets[str(t)] = pm.choose_buffer(policy["table"], t)
        choice[str(t)] = None if row is None else row["buffer"]
    return {"model": model, "n": len(val), "calibration": params.to_dict(),
            "before": measure(val, None), "after": measure(val, params),
            "before_by_dataset": per_dataset(val, None), "after_by_dataset": per_dataset(val, params),
            "levels": level_choice, "bias_mapping": bias_mapping_experiment(val), "policy": policy,
            "choice": {"rule": f"smallest buffer with false pass <= {pm.MAX_FALSE_PASS:.0%} for ages t-{pm.NEAR_BAND}"
                               "..t-1 (validation, calibrated); if no buffer up to "
                               f"{max(pm.BUFFERS)} meets it, the smallest with the lowest false pass",
                       "buffers": choice, "meets_bar": meets}}


def test(parts: Sequence[Split], out: Path) -> dict[str, Any]:
    """Measure the fitted calibration and chosen buffers on test (nothing is refitted)."""
    params = Calibration.from_dict(json.loads((out / "calibration.json").read_text()))
    buffers = {int(t): int(b) for t, b in json.loads((out / "choice.json").read_text())["buffers"].items()
               if b is not None}
    split = combine(parts)
    after = measure(split, params)
    return {"n": len(split), "before": measure(split, None), "after": after,
            "sampling_noise": cm.sampling_noise(after["coverage"], params.mass),
            "before_by_dataset": per_dataset(split, None), "after_by_dataset": per_dataset(split, params),
            "policy_before": policy_block(split, None, buffers), "policy": policy_block(split, params, buffers),
            "buffers": {str(t): b for t, b in buffers.items()}}


def load_assurance(model: str | None, root: Path | None = None) -> dict[str, Any] | None:
    """The committed test measurement of ``model`` (``test.json`` plus ``choice.json`` as ``"choice"``), or None
    when it has not been measured."""
    from agegender.paths import REPO_DIR

    folder = (root or REPO_DIR / "reports") / REPORT_DIR.format(model=model)
    try:
        report = json.loads((folder / "test.json").read_text())
        report["choice"] = json.loads((folder / "choice.json").read_text())
    except (OSError, ValueError):
        return None
    report["_dir"] = str(folder)
    return report


def _parse_parts(items: Sequence[str]) -> list[Split]:
    parts = []
    for item in items:
        name, _, folder = item.partition("=")
        if not folder:
            raise SystemExit(f"expected DATASET=FOLDER, got {item!r}")
        parts.append(load_predictions(Path(folder), name))
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agegender.evaluation.assurance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("fit", "test", "install"))
    parser.add_argument("--val", nargs="*", default=[], metavar="DATASET=DIR")
    parser.add_argument("--test", nargs="*", default=[], metavar="DATASET=DIR")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage == "install":
        print(f"calibration of {args.model} -> {install(out, args.model)} in the manifest", file=sys.stderr)
        return 0
    if args.stage == "fit":
        result = fit(_parse_parts(args.val), args.model)
        (out / "calibration.json").write_text(json.dumps(result["calibration"], indent=2) + "\n")
        (out / "choice.json").write_text(json.dumps(result["choice"], indent=2) + "\n")
        (out / "validation.json").write_text(json.dumps(result, indent=1) + "\n")
        pm.write_policy_csv(result["policy"]["table"], out / "policy-validation.csv")
    else:
        result = test(_parse_parts(args.test), out)
        (out / "test.json").write_text(json.dumps(result, indent=1) + "\n")
        pm.write_policy_csv(result["policy"]["table"], out / "policy-test.csv")
        from agegender.evaluation.assurance_plots import write_assurance_plots

        write_assurance_plots(result, out)
    print(json.dumps({k: result[k] for k in ("before", "after")}, indent=1)[:4000], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
