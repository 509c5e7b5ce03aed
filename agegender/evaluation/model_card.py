"""The measured tables of ``MODEL_CARD.md``, generated from the committed reports so the card never drifts from
them: ``python -m agegender.evaluation.model_card`` rewrites every block between ``<!-- BEGIN name -->`` and
``<!-- END name -->``; ``tests/test_model_card.py`` regenerates the blocks and checks the card holds them.

Sources: ``reports/eval-<model>-utkface-test-crops`` and ``…-all_age_faces-test-photos`` (accuracy, by decade,
gender and race), ``reports/age-assurance-<model>/`` (calibration and the age-check policy) and
``reports/age-assurance-consensus/`` (the check that needs every bundled model to pass).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from agegender.paths import REPO_DIR

MODEL = "efficientnet_lite0"
CARD = REPO_DIR / "MODEL_CARD.md"
ACCURACY = {"UTKFace test (crops)": "eval-{m}-utkface-test-crops",
            "All-Age-Faces test (photos)": "eval-{m}-all_age_faces-test-photos"}
SHOWN_BUFFERS = (0, 4, 7, 10, 14, 16, 17, 20)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _yrs(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def load(root: Path, model: str = MODEL) -> dict[str, Any]:
    reports = {name: json.loads((root / folder.format(m=model) / "report.json").read_text())["metrics"]
               for name, folder in ACCURACY.items()}
    folder = root / f"age-assurance-{model}"
    panel = root / "age-assurance-consensus"
    return {"accuracy": reports, "test": json.loads((folder / "test.json").read_text()),
            "validation": json.loads((folder / "validation.json").read_text()),
            "choice": json.loads((folder / "choice.json").read_text()),
            "consensus": {k: json.loads((panel / f"{k}.json").read_text()) for k in ("validation", "test", "choice")}}


def _ci(interval: list[float] | None, percent: bool) -> str:
    if not interval:
        return "–"
    return "–".join(f"{100 * v:.1f}" if percent else f"{v:.2f}" for v in interval)


def accuracy_block(d: dict[str, Any]) -> str:
    rows = [(name, m["n"], _yrs(m["mae"]), _ci(m.get("intervals", {}).get("mae"), False), _yrs(m["bias"]),
             _pct(m["within_5"]), _pct(m["gender_accuracy"]),
             _ci(m.get("intervals", {}).get("gender_accuracy"), True),
             _pct(m["over_18"]["false_adult_rate"]), _pct(m["over_18"]["false_minor_rate"]))
            for name, m in d["accuracy"].items()]
    return _table(("test split", "n", "MAE (y)", "95 % CI", "bias (y)", "±5 y", "gender acc.", "95 % CI (%)",
                   "minors judged 18+", "adults judged < 18"), rows)


def slices_block(kind: str) -> Callable[[dict[str, Any]], str]:
    def block(d: dict[str, Any]) -> str:
        rows = []
        for name, m in d["accuracy"].items():
            for label, s in m["slices"].get(kind, {}).items():
                rows.append((name, label, s["n"], _yrs(s["mae"]), _yrs(s["bias"]), _pct(s["gender_accuracy"])))
        return _table(("test split", kind, "n", "MAE (y)", "bias (y)", "gender acc."), rows)
    return block


def coverage_block(d: dict[str, Any]) -> str:
    before, after = d["test"]["before"]["coverage"], d["test"]["after"]["coverage"]
    noise = d["test"]["sampling_noise"]  # written by assurance test, from the same counts
    chance = {k: v["chance_within_band_if_calibrated"] for k, v in noise["decades"].items()}
    p_value = {k: v["p_value"] for k, v in noise["decades"].items()}
    rows = [(dec, v["n"], _pct(before["decade"][dec]["coverage"]), _pct(v["coverage"]),
             f"{before['decade'][dec]['width']:.1f} → {v['width']:.1f}",
             "yes" if v["n"] < 100 or abs(v["coverage"] - 0.8) <= 0.02 else "**no**",
             _pct(chance[dec]) if dec in chance else "", f"{p_value[dec]:.2f}" if dec in p_value else "")
            for dec, v in after["decade"].items()]
    rows.append(("all", after["n"], _pct(before["coverage"]), _pct(after["coverage"]),
                 f"{before['width']:.1f} → {after['width']:.1f}", "", "", ""))
    table = _table(("true age", "n", "coverage before", "coverage after", "mean width (y)",
                    "within 80 ± 2 (n ≥ 100)", "chance within 80 ± 2 if calibrated", "p (binomial, vs 80 %)"),
                   rows)
    return (table + f"\n\nA perfectly calibrated interval (true coverage 80 % at every age) would measure inside 80 ± 2 "
            f"in all {len(chance)} decades with ≥ 100 of these test faces with probability "
            f"{_pct(noise['all_within_band_if_calibrated'])} (binomial sampling alone, "
            "`agegender.evaluation.calibration.sampling_noise`); a p-value below 0.05 marks a miss that chance "
            "explains poorly.")


def ece_block(d: dict[str, Any]) -> str:
    rows = []
    for split, key in (("validation", "validation"), ("test", "test")):
        for t, after in d[key]["after"]["ece"].items():
            rows.append((split, f"P(age ≥ {t})", f"{d[key]['before']['ece'][t]['ece']:.4f}", f"{after['ece']:.4f}"))
    rows += [(split, "NLL of the true age", f"{d[split]['before']['nll']:.4f}", f"{d[split]['after']['nll']:.4f}")
             for split in ("validation", "test")]
    rows += [(split, "MAE of the expected age", f"{d[split]['before']['mae']:.4f}", f"{d[split]['after']['mae']:.4f}")
             for split in ("validation", "test")]
    return _table(("split", "measure", "raw", "calibrated"), rows)


def _policy_rows(table: Sequence[dict[str, Any]], buffers: Sequence[int]) -> list[tuple]:
    return [(r["threshold"], r["buffer"], _pct(r["false_pass_near"]["rate"]),
             f"{r['false_pass_near']['count']} / {r['false_pass_near']['n']}", _pct(r["false_pass_near"]["upper95"]),
             _pct(r["false_pass_under_t"]["rate"]), _pct(r["asked_reference"]["rate"]),
             _pct(r["asked_at_t_plus_buffer"]["rate"]))
            for r in table if r["buffer"] in buffers]


POLICY_HEADER = ("t", "buffer", "false pass t-5..t-1", "count", "95 % upper", "false pass < t", "asked ≥ t+7",
                 "asked ≥ t+buffer")


def policy_block(d: dict[str, Any]) -> str:
    return _table(POLICY_HEADER, _policy_rows(d["test"]["policy"]["table"], SHOWN_BUFFERS))


def choice_block(d: dict[str, Any]) -> str:
    buffers = {int(t): b for t, b in d["choice"]["buffers"].items()}
    rows = []
    for split in ("validation", "test"):
        table = d[split]["policy"]["table"]
        rows += [(split, *row) for row in _policy_rows([r for r in table if buffers.get(r["threshold"]) == r["buffer"]],
                                                      list(buffers.values()))]
    meets = ", ".join(f"t = {t}: {'met' if ok else '**not met**'}" for t, ok in d["choice"]["meets_bar"].items())
    return _table(("split", *POLICY_HEADER), rows) + f"\n\nValidation bar (≤ 1 % false pass for t-5..t-1): {meets}."


def sliced_policy_block(d: dict[str, Any], source: dict[str, Any] | None = None) -> str:
    """Test rows at the chosen buffers per dataset, gender and race (``source``: another report's slices)."""
    rows = []
    source = d["test"]["policy"] if source is None else source
    for kind in ("by_dataset", "by_gender", "by_race"):
        for name, entries in source[kind].items():
            for r in entries:
                rows.append((kind[3:], name, r["threshold"], r["buffer"], _pct(r["false_pass_near"]["rate"]),
                             f"{r['false_pass_near']['count']} / {r['false_pass_near']['n']}",
                             _pct(r["asked_reference"]["rate"]), f"{r['asked_reference']['n']}"))
    return _table(("slice", "group", "t", "buffer", "false pass t-5..t-1", "count", "asked ≥ t+7", "n ≥ t+7"),
                  rows)


def consensus_block(d: dict[str, Any]) -> str:
    """Both models must pass (agegender.assurance.consensus) against each alone at its own buffer, on the same faces."""
    c = d["consensus"]
    models = c["choice"]["models"]
    rows = []
    for split in ("validation", "test"):
        for t, chosen in c["choice"]["buffers"].items():
            r = next(r for r in c[split]["table"][t] if r["buffers"] == chosen)
            rows.append((split, t, "all must pass", " / ".join(str(chosen[m]) for m in models), *_rates(r)))
            for m, alone in c[split]["alone"][t].items():
                rows.append((split, t, f"{m} alone", alone["buffer"], *_rates(alone)))
    meets = ", ".join(f"t = {t}: {'met' if ok else '**not met**'}" for t, ok in c["choice"]["meets_bar"].items())
    return (_table(("split", "t", "check", f"buffer ({' / '.join(models)})", "false pass t-5..t-1", "count",
                    "95 % upper", "asked ≥ t+7"), rows)
            + f"\n\nValidation bar (≤ 1 % false pass for t-5..t-1), all models must pass: {meets}.")


def _rates(r: dict[str, Any]) -> tuple:
    near = r["false_pass_near"]
    return (_pct(near["rate"]), f"{near['count']} / {near['n']}", _pct(near["upper95"]),
            _pct(r["asked_reference"]["rate"]))


LEVEL_METHODS = {
    "conformal": "split-conformal levels per predicted-age region",
    "decade_fit": "levels per predicted-age region fitted to true-decade coverage",
    "label_conditional": "label-conditional conformal levels per true-age region, masses tuned until the hull "
                         "covers at least 80 % of each region",
}


def fit_block(d: dict[str, Any]) -> str:
    v = d["validation"]
    cal, bias, levels = v["calibration"], v["bias_mapping"], v["levels"]
    by = "candidate (true) age" if cal.get("regions_by") == "candidate" else "predicted age"
    regions = ", ".join(f"{r['from']:.0f}+: {r['low']:.3f}–{r['high']:.3f}" for r in cal["regions"])
    cv, widths = levels["heldout_rms_decade_deviation_points"], levels.get("heldout_mean_width_years", {})
    chosen = levels["chosen"]
    others = "; ".join(f"{LEVEL_METHODS[k]} {cv[k]:.2f}" + (f" ({widths[k]:.1f} y wide)" if k in widths else "")
                       for k in cv if k != chosen)
    return "\n".join([
        f"- Fitted on {v['n']} validation faces ({cal['fitted_on']}); the test splits were measured once, afterwards.",
        f"- Temperature T = {cal['temperature']:.4f} (minimises the validation NLL).",
        f"- Interval CDF levels per region of the {by}: {regions}.",
        f"- Chosen: {LEVEL_METHODS[chosen]}, held-out RMS decade deviation {cv[chosen]:.2f} points"
        + (f" ({widths[chosen]:.1f} y wide)" if chosen in widths else "")
        + f"; rejected: {others} ({levels.get('method', '2-fold CV on validation').split(' (')[0]}).",
        *(["- Out-of-fold coverage of the chosen levels per decade (validation): " + ", ".join(
            f"{d} {100 * c:.1f} %" for d, c in levels["heldout_coverage_by_decade"][chosen].items()) + "."]
          if "heldout_coverage_by_decade" in levels else []),
        f"- Monotone bias mapping ({bias['method']}): MAE {bias['mae_before']:.4f} → {bias['mae_after']:.4f}, "
        f"mean per-decade |bias| {bias['decade_abs_bias_before']:.4f} → {bias['decade_abs_bias_after']:.4f}: "
        + ("kept." if bias["kept"] else "**not kept** (both had to improve)."),
    ])


BLOCKS: dict[str, Callable[[dict[str, Any]], str]] = {
    "accuracy": accuracy_block, "decade": slices_block("decade"), "gender": slices_block("gender"),
    "race": slices_block("race"), "coverage": coverage_block, "ece": ece_block, "policy": policy_block,
    "choice": choice_block, "policy_slices": sliced_policy_block, "fit": fit_block, "consensus": consensus_block,
    "consensus_slices": lambda d: sliced_policy_block(d, d["consensus"]["test"]),
}


def readme_policy_block(d: dict[str, Any]) -> str:
    """The README's short table: per threshold, the old buffer 7 and the validated default, on test."""
    buffers = {int(t): b for t, b in d["choice"]["buffers"].items()}
    rows = [r for r in d["test"]["policy"]["table"] if r["buffer"] in (7, buffers.get(r["threshold"]))]
    return _table(POLICY_HEADER, _policy_rows(rows, sorted({7, *buffers.values()})))


def readme_coverage_block(d: dict[str, Any]) -> str:
    before, after = d["test"]["before"]["coverage"], d["test"]["after"]["coverage"]
    decades = [k for k, v in after["decade"].items() if v["n"] >= 100]
    return _table(("80 % interval, test", *decades, "all"),
                  [("raw", *(_pct(before["decade"][k]["coverage"]) for k in decades), _pct(before["coverage"])),
                   ("calibrated", *(_pct(after["decade"][k]["coverage"]) for k in decades), _pct(after["coverage"]))])


README = REPO_DIR / "README.md"
README_BLOCKS: dict[str, Callable[[dict[str, Any]], str]] = {
    "readme_policy": readme_policy_block, "readme_coverage": readme_coverage_block, "readme_consensus": consensus_block,
}


def blocks(root: Path | None = None, model: str = MODEL, which: dict | None = None) -> dict[str, str]:
    data = load(root or REPO_DIR / "reports", model)
    return {name: fn(data) for name, fn in (BLOCKS if which is None else which).items()}


def render(text: str, generated: dict[str, str]) -> str:
    for name, body in generated.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n)(?:.*?\n)?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"no block {name!r} to fill")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    CARD.write_text(render(CARD.read_text(), blocks()))
    README.write_text(render(README.read_text(), blocks(which=README_BLOCKS)))
    print(f"updated {CARD} and {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
