"""What the model report and the age-check pages read: the weights manifest and the evaluation reports.

Everything is read from files at render time (``weights/MANIFEST.json``, ``reports/<name>/report.json``);
a missing or unreadable file gives an empty answer, never an exception, because a fresh checkout has neither.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from agegender import AgeGenderError
from agegender.paths import REPO_DIR
from agegender.weights import default_backbone, read_manifest  # noqa: F401 - default_backbone: for the report page


def entry_metrics(entry: dict | None) -> dict[str, Any]:
    """Headline numbers of a manifest entry: ``{"mae", "gender_acc", "source"}`` from its test metrics if an
    evaluation added them, else its validation metrics (``metrics.val.combined`` as written by the export)."""
    metrics = (entry or {}).get("metrics") or {}
    if isinstance(metrics.get("mae"), (int, float)):
        return {"mae": metrics["mae"], "gender_acc": metrics.get("gender_accuracy", metrics.get("gender_acc")),
                "source": "manifest"}
    for split in ("test", "val"):
        block = metrics.get(split)
        if isinstance(block, dict):
            for key in ("combined", *block):
                part = block.get(key)
                if isinstance(part, dict) and isinstance(part.get("mae"), (int, float)):
                    return {"mae": part["mae"], "gender_acc": part.get("gender_acc", part.get("gender_accuracy")),
                            "source": f"{split} {key}"}
    return {}


def training_epochs(entry: dict | None) -> float | None:
    """Epochs of the whole training behind a manifest entry: a fine-tuned model (``--init-from``) adds the epochs
    of the runs it started from, which the manifest nests under ``training.initialised_from``."""
    stage = (entry or {}).get("training")
    total = None
    while isinstance(stage, dict) and isinstance(stage.get("epochs_completed"), (int, float)):
        total = (total or 0.0) + stage["epochs_completed"]
        stage = stage.get("initialised_from") or stage.get("parent")
    return total


def reports_dir() -> Path:
    """Where ``agegender evaluate`` writes ``<name>/report.json`` (``AGEGENDER_REPORTS`` overrides)."""
    return Path(os.environ.get("AGEGENDER_REPORTS", REPO_DIR / "reports"))


def load_reports(root: Path | None = None) -> dict[str, dict]:
    """Every ``reports/*/report.json`` by folder name; unreadable files are skipped (and named in ``_errors``)."""
    root = root or reports_dir()
    out: dict[str, dict] = {}
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*/report.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            data.setdefault("_path", str(path))
            out[path.parent.name] = data
    return out


def manifest_models() -> dict[str, dict]:
    """Manifest entries of the bundled age/gender models, by backbone."""
    try:
        files = read_manifest().get("files", {})
    except AgeGenderError:
        return {}
    return {e.get("backbone", name): {"file": name, **e} for name, e in files.items() if e.get("kind") == "agegender"}


def report_metrics(report: dict | None) -> dict:
    """The metrics of a report written by ``agegender evaluate`` (``report["metrics"]``), or a flat report."""
    if not report:
        return {}
    metrics = report.get("metrics")
    return metrics if isinstance(metrics, dict) else report


def report_model(name: str, report: dict) -> str:
    """Which model a report describes: the estimator recorded in its run, else its title, else the folder."""
    m = report_metrics(report)
    estimator = (m.get("run") or {}).get("estimator") or {}
    for value in (estimator.get("model"), (report.get("extra") or {}).get("model"), report.get("model")):
        if isinstance(value, str) and value:
            return value
    title = report.get("title")
    if isinstance(title, str) and " on " in title:
        return title.split(" on ", 1)[0].strip()
    return name


def manifest_report_refs(entry: dict) -> list[str]:
    """Report folders a manifest entry points to: ``report`` at its top, in ``metrics``, or in each of the
    ``metrics.test.<set:mode>`` blocks that ``agegender evaluate`` adds (in the manifest's order)."""
    refs: list[str] = []
    metrics = entry.get("metrics") or {}
    for holder in (entry, metrics, *(v for v in (metrics.get("test") or {}).values() if isinstance(v, dict))):
        if isinstance(holder.get("report"), str):
            refs.append(holder["report"])
    return refs


MODE_PREFERENCE = ("photos", "pasted", "crops")  # closest to what the app does first


def report_for_model(model: str | None, reports: dict[str, dict] | None = None) -> tuple[str, dict] | None:
    """The evaluation report that best describes ``model`` in the app: the one the manifest points to, else
    its report on whole photos, else on pasted chips, else on chips; larger evaluations first."""
    if model is None:
        return None
    reports = load_reports() if reports is None else reports
    for ref in manifest_report_refs(manifest_models().get(model, {})):
        folder = Path(ref).name if Path(ref).name != "report.json" else Path(ref).parent.name
        if folder in reports:
            return folder, reports[folder]
    mine = [(name, rep) for name, rep in reports.items()
            if not name.startswith("peer") and report_model(name, rep) == model]
    if not mine:
        return None

    def rank(item: tuple[str, dict]) -> tuple[int, int]:
        m = report_metrics(item[1])
        mode = (item[1].get("extra") or {}).get("mode") or (m.get("run") or {}).get("mode")
        order = MODE_PREFERENCE.index(mode) if mode in MODE_PREFERENCE else len(MODE_PREFERENCE)
        return order, -int(m.get("n") or 0)

    return min(mine, key=rank)


def report_slices(report: dict | None, kind: str) -> list[dict]:
    """Rows of the ``decade``/``gender``/``race`` slices of a report (``metrics.slices[kind]``, or a flat
    ``by_<kind>`` section), each with the slice name under ``kind``."""
    m = report_metrics(report)
    section = (m.get("slices") or {}).get(kind)
    if section is None:
        section = m.get(f"by_{kind}")
    return by_group_rows(section, kind)


def by_group_rows(section: Any, group_name: str) -> list[dict]:
    """Normalise a slice section (a {group: {...}} dict or a list of records) to records."""
    rows: list[dict] = []
    if isinstance(section, dict):
        for key, value in section.items():
            if isinstance(value, dict):
                rows.append({group_name: str(key), **value})
            elif isinstance(value, (int, float)):
                rows.append({group_name: str(key), "mae": value})
    elif isinstance(section, list):
        for item in section:
            if isinstance(item, dict):
                item = dict(item)
                label = item.pop(group_name, None) or item.pop("group", None) or item.pop("name", None) \
                    or item.pop("label", None)
                rows.append({group_name: str(label), **item})
    return rows


def over_18(report: dict | None) -> dict:
    """``{"accuracy", "false_adult_rate", "false_minor_rate"}`` from either report layout."""
    m = report_metrics(report)
    section = m.get("over_18")
    if isinstance(section, dict):
        return section
    return {"accuracy": m.get("over18_accuracy"), "false_adult_rate": m.get("false_adult_rate"),
            "false_minor_rate": m.get("false_minor_rate")}


def error_at_age(report: dict | None, age: float) -> tuple[float, str] | None:
    """(MAE, decade label) of the report's age decade containing ``age``, if measured."""
    for row in report_slices(report, "decade"):
        label = row["decade"]
        lo, hi = _decade_bounds(label)
        mae = row.get("mae")
        if lo is not None and lo <= age <= hi and isinstance(mae, (int, float)) and math.isfinite(mae):
            return float(mae), label
    return None

def _decade_bounds(label: str) -> tuple[float | None, float]:
    text = str(label).replace("–", "-").replace("s", "").strip()
    try:
        if text.endswith("+"):
            return float(text[:-1]), 1e9
        if "-" in text:
            lo, hi = text.split("-", 1)
            return float(lo), float(hi) + 0.999
        lo = float(text)
        return lo, lo + 9.999
    except ValueError:
        return None, 0.0


HISTORY_KEYS = ("history", "training_history", "history_csv", "metrics_csv", "training_log", "log_csv", "curves")


def training_history(*sources: dict | None, base_dirs: Sequence[Path] = ()) -> pd.DataFrame | None:
    """Training curves from the first source (a manifest entry, a report, its ``extra``/``training``) that has
    them: a list of per-epoch records, or the path of a CSV with one row per epoch. ``None`` if none does."""
    candidates: list[dict] = []
    for src in sources:
        checkpoint = ((src or {}).get("training") or {}).get("checkpoint") if isinstance(src, dict) else None
        if isinstance(checkpoint, str) and "/" in checkpoint:  # a local run folder: runs/<name>/metrics.csv
            local = REPO_DIR / "runs" / checkpoint.split("/", 1)[0] / "metrics.csv"
            if local.is_file():
                try:
                    return pd.read_csv(local)
                except (OSError, ValueError, pd.errors.ParserError):
                    pass
        if isinstance(src, dict):
            candidates += [src] + [src[k] for k in ("extra", "training", "train") if isinstance(src.get(k), dict)]
    for src in candidates:
        for key in HISTORY_KEYS:
            value = src.get(key)
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                return pd.DataFrame(value)
            if isinstance(value, str) and value.endswith(".csv"):
                for base in (*base_dirs, REPO_DIR):
                    path = (Path(base) / value) if not Path(value).is_absolute() else Path(value)
                    if path.is_file():
                        try:
                            return pd.read_csv(path)
                        except (OSError, ValueError, pd.errors.ParserError):
                            return None
    return None


def headline(name: str, report: dict) -> dict:
    """The model report's headline row of one evaluation report (one row per report folder)."""
    m = report_metrics(report)
    o18 = over_18(report)
    extra = report.get("extra") or {}
    run = m.get("run") or {}
    return {
        "report": name, "model": report_model(name, report) + (" (peer)" if name.startswith("peer") else ""),
        "dataset": extra.get("dataset"), "mode": extra.get("mode") or run.get("mode"), "faces": m.get("n"),
        "MAE (y)": m.get("mae"), "RMSE (y)": m.get("rmse"), "±2 y": m.get("within_2"), "±5 y": m.get("within_5"),
        "over-18 acc.": o18.get("accuracy"), "false adult": o18.get("false_adult_rate"),
        "false minor": o18.get("false_minor_rate"), "gender acc.": m.get("gender_accuracy"),
        "ECE P(≥18)": (m.get("calibration") or {}).get("ece"),
        "detection rate": run.get("detection_rate"), "ms / image": run.get("ms_per_image"),
    }


# Training-log columns grouped by what their values mean, so each family gets an axis of its own: a learning
# rate of 1e-4 and a loss of 6 on one axis make both flat lines. Bookkeeping columns (step, seconds) are left out.
CURVE_FAMILIES = (("loss", "loss"), ("MAE (years)", "mae"), ("accuracy / share", ("acc", "within")),
                  ("learning rate", "lr"))
CURVE_SKIP = ("step", "seconds", "time", "wall", "samples")


def curve_family(column: str) -> str | None:
    """The family of a training-log column (``None``: bookkeeping, not plotted)."""
    name = column.lower()
    if any(name == s or name.startswith(s + "_") or name.endswith("_" + s) for s in CURVE_SKIP):
        return None
    for family, marks in CURVE_FAMILIES:
        for mark in (marks,) if isinstance(marks, str) else marks:
            if name == mark or mark in name.split("_"):
                return family
    return "other"


def training_curves(history: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """``(x column, long table)`` of a training log: one row per (x, metric) with the metric's family."""
    x = "epoch" if "epoch" in history else history.columns[0]
    numeric = [c for c in history.columns if c != x and pd.api.types.is_numeric_dtype(history[c])]
    families = {c: curve_family(c) for c in numeric}
    keep = [c for c in numeric if families[c] is not None]
    long = history.melt(id_vars=[x], value_vars=keep, var_name="metric", value_name="value").dropna()
    long["family"] = long["metric"].map(families)
    return x, long
