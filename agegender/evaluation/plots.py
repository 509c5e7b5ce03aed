"""PNG figures of an evaluation report: age-group confusion matrices, the reliability diagram of
P(age ≥ 18), and MAE by age decade.

Uses matplotlib's object API with the Agg canvas (no ``pyplot``): it neither needs a display nor touches the
global backend or figure state of a host application such as the Streamlit app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix (each true group sums to 1) with the raw counts written in the cells."""
    counts = np.asarray(confusion, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)
    k = len(labels)
    fig = Figure(figsize=(1.2 + 0.6 * k, 1.0 + 0.55 * k))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true group")
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), [f"{label} (n={int(t)})" for label, t in zip(labels, totals[:, 0])], fontsize=8)
    ax.set_xlabel("predicted group")
    ax.set_ylabel("true group")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_reliability(calibration: dict[str, Any], path: Path) -> Path:
    """Observed frequency against mean predicted probability per bin; the diagonal is perfect calibration."""
    bins = [b for b in calibration["bins"] if b["count"]]
    fig = Figure(figsize=(5.0, 5.4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["observed"] for b in bins], width=0.09, alpha=0.35,
           color="#0072B2", label="observed frequency")
    ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], "o-", color="#D55E00",
            label="(mean predicted, observed)")
    for b in bins:
        ax.annotate(str(b["count"]), ((b["lo"] + b["hi"]) / 2, b["observed"]), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel(f"predicted {calibration['target']}")
    ax.set_ylabel("observed share of adults")
    ax.set_title(f"Reliability of {calibration['target']} (ECE {calibration['ece']:.3f}; numbers = faces)",
                 fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_mae_by_decade(decades: dict[str, dict[str, Any]], path: Path) -> Path:
    """Bar per age decade (MAE in years), with the number of faces above each bar."""
    names = list(decades)
    mae = [decades[n]["mae"] for n in names]
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    bars = ax.bar(names, mae, color="#009E73")
    for bar, name in zip(bars, names):
        ax.annotate(f"n={decades[name]['n']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xlabel("true age")
    ax.set_ylabel("MAE (years)")
    ax.set_ylim(0, max(mae) * 1.15 + 0.5)
    ax.set_title("Age error by decade", fontsize=10)
    return _save(fig, path)


def write_plots(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """All figures of a report into ``out_dir``; returns their paths."""
    paths = [plot_confusion(g["confusion"], g["labels"], f"Age groups: {name} (accuracy {100 * g['accuracy']:.1f} %)",
                            out_dir / f"confusion_{name}.png") for name, g in metrics["groups"].items()]
    paths.append(plot_reliability(metrics["calibration"], out_dir / "reliability_over_18.png"))
    paths.append(plot_mae_by_decade(metrics["slices"]["decade"], out_dir / "mae_by_decade.png"))
    return paths
