"""Write an evaluation report: ``report.json`` (everything), ``summary.md`` (for people), ``predictions.csv``
(one row per image, to find the worst cases) and the plots of :mod:`agegender.evaluation.plots`.

The input is the metrics dict of :func:`agegender.evaluation.compute_metrics` (plus an optional ``run`` entry
from :func:`agegender.evaluation.evaluate`), so any model scored with it — ours or a peer — gets the same report.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

from agegender.evaluation.plots import write_plots

PREDICTION_COLUMNS = ("file", "age", "gender", "race", "detected", "pred_age", "p_female", "p_adult",
                      "faces_found", "match_iou", "chip_framing")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _years(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _with_interval(text: str, interval: list[float] | None, percent: bool) -> str:
    """``text`` followed by its 95 % confidence interval, when the report has one."""
    if not interval:
        return text
    low, high = (f"{100 * v:.1f}" for v in interval) if percent else (f"{v:.2f}" for v in interval)
    return f"{text} (95 % CI {low}–{high}{' %' if percent else ''})"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _run_lines(run: dict[str, Any]) -> list[str]:
    lines = [f"Mode **{run['mode']}**: {run['images']} images, a face found in {run['faces_found']} "
             f"({_pct(run['detection_rate'])}). Model time {run['ms_per_image']:.1f} ms per image "
             "(inside the model's calls, detection included where the mode detects; decoding excluded)."]
    if run["missed"]:
        lines.append(f"The accuracy numbers below cover the {run['faces_found']} images with a found face only; "
                     f"the {run['missed']} misses are listed in predictions.csv (detected = False).")
    estimator = run.get("estimator", {})
    if estimator and not estimator.get("trained", True):
        lines.append("**The model ran with untrained, random weights: these numbers are meaningless.**")
    return lines


def _slice_table(title: str, slices: dict[str, dict[str, Any]]) -> list[str]:
    rows = [(name, s["n"], _years(s["mae"]), _years(s["bias"]), _pct(s["within_5"]), _pct(s["gender_accuracy"]))
            for name, s in slices.items()]
    return ["", f"## {title}", ""] + _table(("slice", "n", "MAE", "bias", "±5 y", "gender acc."), rows)


def summary_markdown(metrics: dict[str, Any], title: str, extra: dict[str, Any] | None = None) -> str:
    """The report as Markdown: headline table, age groups, per-slice tables, calibration table."""
    o18 = metrics["over_18"]
    ci = metrics.get("intervals") or {}  # reports written before intervals existed have none
    lines = [f"# {title}", ""]
    if extra:
        lines += [f"- {key}: {value}" for key, value in extra.items()] + [""]
    if "run" in metrics:
        lines += _run_lines(metrics["run"]) + [""]
    rows = [
        ("faces evaluated", metrics["n"]),
        ("MAE (years, expected age)", _with_interval(_years(metrics["mae"]), ci.get("mae"), False)),
        ("RMSE (years)", _years(metrics["rmse"])),
        ("bias (predicted − true)", _years(metrics["bias"])),
        ("within ±2 years", _pct(metrics["within_2"])),
        ("within ±5 years", _with_interval(_pct(metrics["within_5"]), ci.get("within_5"), True)),
        ("over/under-18 accuracy", _with_interval(_pct(o18["accuracy"]), ci.get("over_18"), True)),
        ("false-adult rate (minors called adult)", f"{_pct(o18['false_adult_rate'])} "
                                                   f"({o18['false_adults']}/{o18['minors']})"),
        ("false-minor rate (adults called minor)", f"{_pct(o18['false_minor_rate'])} "
                                                   f"({o18['false_minors']}/{o18['adults']})"),
        ("gender accuracy", _with_interval(_pct(metrics["gender_accuracy"]), ci.get("gender_accuracy"), True)),
    ]
    rows += [(f"{name} group acc. / one-off", f"{_pct(g['accuracy'])} / {_pct(g['one_off_accuracy'])}")
             for name, g in metrics["groups"].items()]
    rows.append(("ECE of P(age ≥ 18), 10 bins", f"{metrics['calibration']['ece']:.4f}"))
    lines += _table(("metric", "value"), rows)
    lines += ["", "## Age groups", ""] + _table(
        ("preset", "groups", "accuracy", "one-off accuracy"),
        [(name, ", ".join(g["labels"]), _pct(g["accuracy"]), _pct(g["one_off_accuracy"]))
         for name, g in metrics["groups"].items()])
    titles = {"decade": "By age decade", "gender": "By gender", "race": "By race (UTKFace labels)"}
    for key, slices in metrics["slices"].items():
        lines += _slice_table(titles.get(key, key), slices)
    cal = metrics["calibration"]
    lines += ["", f"## Calibration of {cal['target']}", "",
              "Observed = share of true adults among faces whose predicted probability falls in the bin.", ""]
    lines += _table(("bin", "mean predicted", "observed", "count"),
                    [(b["bin"], _years(b["mean_predicted"]), _years(b["observed"]), b["count"]) for b in cal["bins"]])
    return "\n".join(lines) + "\n"


def write_report(metrics: dict[str, Any], out_dir: str | Path, title: str,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``report.json``, ``summary.md`` and the PNG plots into ``out_dir``; returns the JSON document.

    JSON is written with ``allow_nan=False``: a NaN slipping into the metrics fails here, not in a reader.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(metrics, out)
    report = {"title": title, "extra": dict(extra or {}), "metrics": metrics, "plots": [p.name for p in plots]}
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (out / "summary.md").write_text(summary_markdown(metrics, title, extra))
    return report


def write_predictions(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> Path:
    """One CSV row per evaluated image (columns a row lacks stay empty)."""
    path = Path(out_dir) / "predictions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PREDICTION_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
