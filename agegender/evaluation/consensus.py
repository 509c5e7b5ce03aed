"""Choose the buffers of the two-model age check (:mod:`agegender.assurance.consensus`) on validation, measure them once on
test, and install them in the manifest. Inputs are each model's ``agegender evaluate --age-probs
--no-calibration`` folders; each model's calibration and single-model buffers come from its manifest entry (what
``agegender.evaluation.assurance install`` put there), so the panel is measured exactly as it runs.

    python -m agegender.evaluation.consensus fit  --val  MODEL:DATASET=DIR ... --out reports/age-assurance-consensus
    python -m agegender.evaluation.consensus test --test MODEL:DATASET=DIR ... --out reports/age-assurance-consensus
    python -m agegender.evaluation.consensus install --out reports/age-assurance-consensus

The rule: each model starts from its own validated buffer for t and all are lowered (or raised) by the same
number of years, ``shift``; the chosen shift is the one that lowers them most while the false pass of people
t-5 … t-1 stays ≤ 1 % on validation. One shared number, not one buffer per model: with about a hundred minors per
threshold, a free pair of buffers would be fitted to a handful of faces.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agegender.assurance.age_check import passes
from agegender.assurance.calibration import Calibration, apply_calibration
from agegender.groups import expected_age
from agegender.evaluation import policy as pm
from agegender.evaluation.assurance import GENDER_NAMES, RACE_NAMES, Split, combine, load_predictions

REPORT = "reports/age-assurance-consensus"
MAX_BUFFER = max(pm.BUFFERS)


class Panel:
    """Labelled faces and, per model, the calibrated (age, interval low end) the Estimator reports for them, and
    the test-time views (:data:`agegender.views.VIEW_SETS`) the model ran to make them."""

    def __init__(self, labels: Split, estimates: dict[str, tuple[np.ndarray, np.ndarray]],
                 views: dict[str, str] | None = None):
        self.labels, self.estimates = labels, estimates
        self.views = views or {m: "validated" for m in estimates}

    @property
    def models(self) -> list[str]:
        return list(self.estimates)

    def passed(self, threshold: int, buffers: dict[str, int], mask: np.ndarray | None = None) -> np.ndarray:
        """Who passes when every model must pass under its buffer."""
        ok = np.ones(len(self.labels), bool)
        for model, (age, low) in self.estimates.items():
            ok &= np.asarray(passes(age, low, threshold, buffers[model]), dtype=bool)
        return ok if mask is None else ok[mask]


def report_views(folder: Path) -> str:
    """The views an ``agegender evaluate`` folder was made with: its report's ``views``; reports written before
    it was recorded say it only in their title."""
    report = json.loads((folder / "report.json").read_text())
    if "views" in report.get("extra", {}):
        return str(report["extra"]["views"])
    from agegender.cli.options import VIEW_SET_TITLES

    title = report.get("title", "")
    return next((name for name, words in VIEW_SET_TITLES.items() if words and words in title), "validated")


def _detected_files(folder: Path) -> list[str]:
    with open(folder / "predictions.csv") as fh:
        return [r["file"] for r in csv.DictReader(fh) if r["detected"] == "True"]


def model_settings(model: str, weights_dir: Path | None = None) -> tuple[Calibration, dict[int, int]]:
    """A bundled model's installed calibration and single-model buffers."""
    from agegender.assurance.age_check import buffers_of
    from agegender.weights import model_entry

    found = model_entry(model, weights_dir)
    if found is None or not found[1].get("calibration") or not buffers_of(found[1]):
        raise SystemExit(f"{model}: no installed calibration and buffers (run agegender.evaluation.assurance "
                         "install for it first)")
    return Calibration.from_dict(found[1]["calibration"]), buffers_of(found[1]) or {}


def load_panel(items: Sequence[str], weights_dir: Path | None = None) -> Panel:
    """``MODEL:DATASET=DIR`` items → a :class:`Panel`; every model must have found the same faces (one detector)."""
    per_model: dict[str, list[tuple[str, Path]]] = {}
    for item in items:
        key, _, folder = item.partition("=")
        model, _, dataset = key.partition(":")
        if not (folder and dataset):
            raise SystemExit(f"expected MODEL:DATASET=FOLDER, got {item!r}")
        per_model.setdefault(model, []).append((dataset, Path(folder)))
    if len(per_model) < 2:
        raise SystemExit("a consensus needs the predictions of at least two models")
    labels, estimates, files, views = None, {}, None, {}
    for model, parts in per_model.items():
        kinds = {report_views(folder) for _, folder in parts}
        if len(kinds) != 1:
            raise SystemExit(f"{model}: its folders were made with different test-time views ({', '.join(kinds)})")
        views[model] = kinds.pop()
        names = [f"{d}/{f}" for d, folder in parts for f in _detected_files(folder)]
        split = combine([load_predictions(folder, d) for d, folder in parts])
        if files is None:
            labels, files = split, names
        elif names != files:
            raise SystemExit(f"{model} found other faces than {next(iter(per_model))}: run both on the same splits")
        params, _ = model_settings(model, weights_dir)
        probs, low, _ = apply_calibration(split.probs, params)
        estimates[model] = (np.asarray(expected_age(probs)), low)
    return Panel(labels, estimates, views)


def shift_rows(panel: Panel, own: dict[str, dict[int, int]], threshold: int) -> list[dict[str, Any]]:
    """Policy rows for every shift of the models' own buffers for ``threshold``; ``buffer`` is the first model's
    (so that :func:`agegender.evaluation.policy.choose_buffer` applies unchanged), ``buffers`` all of them."""
    start = {m: own[m].get(threshold, max(own[m].values())) for m in panel.models}
    rows = []
    for shift in range(-(MAX_BUFFER - max(start.values())), min(start.values()) + 1):
        buffers = {m: b - shift for m, b in start.items()}
        row = pm.rates_of_passes(panel.labels.ages, panel.passed(threshold, buffers), threshold,
                                 buffers[panel.models[0]])
        rows.append({**row, "shift": shift, "buffers": buffers})
    return sorted(rows, key=lambda r: r["buffer"])


def _alone(panel: Panel, own: dict[str, dict[int, int]], threshold: int) -> dict[str, Any]:
    """Each model alone at its own buffer, on the same faces (what the panel is compared with)."""
    out = {}
    for model, (age, low) in panel.estimates.items():
        b = own[model].get(threshold, max(own[model].values()))
        out[model] = pm.policy_row(panel.labels.ages, age, low, threshold, b)
    return out


def sliced(panel: Panel, buffers: dict[int, dict[str, int]]) -> dict[str, Any]:
    """The chosen rows per dataset, gender and race."""
    lab = panel.labels
    out: dict[str, Any] = {}
    for title, keys, names in (("by_dataset", lab.dataset, {d: d for d in dict.fromkeys(lab.dataset)}),
                               ("by_gender", lab.gender, GENDER_NAMES), ("by_race", lab.race, RACE_NAMES)):
        out[title] = {}
        for key, name in names.items():
            m = np.asarray(keys) == key
            if m.any():
                out[title][name] = [pm.rates_of_passes(lab.ages[m], panel.passed(t, b, m), t, b[panel.models[0]])
                                    for t, b in buffers.items()]
    return out


def measure(panel: Panel, own: dict[str, dict[int, int]]) -> dict[str, Any]:
    table = {str(t): shift_rows(panel, own, t) for t in pm.THRESHOLDS}
    return {"models": panel.models, "views": panel.views, "n": len(panel.labels), "table": table,
            "alone": {str(t): _alone(panel, own, t) for t in pm.THRESHOLDS}}


def fit(panel: Panel, own: dict[str, dict[int, int]]) -> dict[str, Any]:
    result = measure(panel, own)
    buffers, meets, shifts = {}, {}, {}
    for t in pm.THRESHOLDS:
        row, meets[str(t)] = pm.choose_buffer(result["table"][str(t)], t)
        buffers[str(t)] = row["buffers"] if row else None
        shifts[str(t)] = row["shift"] if row else None
    result["choice"] = {
        "models": panel.models, "views": panel.views, "buffers": buffers, "shift": shifts, "meets_bar": meets,
        "own_buffers": {m: {str(t): b for t, b in own[m].items()} for m in panel.models},
        "rule": f"every model passes; each model's own validated buffer minus one shared shift, the largest shift "
                f"with false pass <= {pm.MAX_FALSE_PASS:.0%} for ages t-{pm.NEAR_BAND}..t-1 (validation, "
                "calibrated); if none meets it, the smallest buffers with the lowest false pass"}
    return result


def test(panel: Panel, own: dict[str, dict[int, int]], choice: dict[str, Any]) -> dict[str, Any]:
    chosen_views = {m: choice.get("views", {}).get(m, "validated") for m in panel.models}
    if panel.views != chosen_views:
        raise SystemExit(f"the test predictions were made with views {panel.views}, the buffers were chosen with "
                         f"{chosen_views}: measure what was chosen")
    result = measure(panel, own)
    chosen = {int(t): b for t, b in choice["buffers"].items() if b}
    result["chosen"] = {str(t): pm.rates_of_passes(panel.labels.ages, panel.passed(t, b), t, b[panel.models[0]])
                        for t, b in chosen.items()}
    result.update(sliced(panel, chosen))
    result["choice"] = choice
    return result


def write_csv(table: dict[str, list[dict[str, Any]]], models: list[str], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["threshold", "shift", *[f"buffer_{m}" for m in models], "false_pass_near", "false_pass_near_n",
                    "false_pass_near_upper95", "false_pass_under_t", "asked_reference", "asked_at_t_plus_buffer"])
        for rows in table.values():
            for r in rows:
                w.writerow([r["threshold"], r["shift"], *[r["buffers"][m] for m in models],
                            r["false_pass_near"]["rate"], r["false_pass_near"]["n"], r["false_pass_near"]["upper95"],
                            r["false_pass_under_t"]["rate"], r["asked_reference"]["rate"],
                            r["asked_at_t_plus_buffer"]["rate"]])


def install(out: Path, weights_dir: Path | None = None) -> dict[str, Any]:
    """``out/choice.json`` → the manifest's ``"age_check_consensus"``."""
    from agegender.assurance.consensus import MANIFEST_KEY
    from agegender.weights import model_entry, read_manifest, write_manifest

    choice = json.loads((out / "choice.json").read_text())
    for model in choice["models"]:
        if model_entry(model, weights_dir) is None:
            raise SystemExit(f"{model} is not bundled")
    manifest = read_manifest(weights_dir)
    manifest[MANIFEST_KEY] = {"models": choice["models"], "buffers": choice["buffers"],
                              "views": choice.get("views") or {m: "validated" for m in choice["models"]},
                              "meets_bar": choice["meets_bar"], "rule": choice["rule"], "report": REPORT}
    write_manifest(manifest, weights_dir)
    return manifest[MANIFEST_KEY]


def load_consensus_report(root: Path | None = None) -> dict[str, Any] | None:
    """The committed test measurement of the panel in the shape the age-check page shows a single model's
    (``policy.table`` of rows with ``threshold`` and ``buffer``; here each row also has ``buffers``), or None."""
    from agegender.paths import REPO_DIR

    folder = (root or REPO_DIR / "reports") / Path(REPORT).name
    try:
        report = json.loads((folder / "test.json").read_text())
    except (OSError, ValueError):
        return None
    report["policy"] = {"table": [r for rows in report["table"].values() for r in rows]}
    report["_dir"] = str(folder)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agegender.evaluation.consensus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("fit", "test", "install"))
    parser.add_argument("--val", nargs="*", default=[], metavar="MODEL:DATASET=DIR")
    parser.add_argument("--test", nargs="*", default=[], metavar="MODEL:DATASET=DIR")
    parser.add_argument("--out", default=REPORT)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage == "install":
        print(json.dumps(install(out)), file=sys.stderr)
        return 0
    panel = load_panel(args.val if args.stage == "fit" else args.test)
    own = {m: model_settings(m)[1] for m in panel.models}
    if args.stage == "fit":
        result = fit(panel, own)
        (out / "choice.json").write_text(json.dumps(result["choice"], indent=2) + "\n")
        (out / "validation.json").write_text(json.dumps(result, indent=1) + "\n")
        write_csv(result["table"], panel.models, out / "policy-validation.csv")
        print(json.dumps(result["choice"], indent=1), file=sys.stderr)
    else:
        result = test(panel, own, json.loads((out / "choice.json").read_text()))
        (out / "test.json").write_text(json.dumps(result, indent=1) + "\n")
        write_csv(result["table"], panel.models, out / "policy-test.csv")
        print(json.dumps(result["chosen"], indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
