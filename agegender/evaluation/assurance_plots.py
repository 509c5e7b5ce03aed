"""PNG figures of the age-assurance test report: reliability of P(age >= t) per threshold and the 80 %
interval's coverage per age decade, each before and after calibration (matplotlib object API, no pyplot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_reliability(result: dict[str, Any], path: Path) -> Path:
    thresholds = list(result["after"]["ece"])
    fig = Figure(figsize=(3.3 * len(thresholds), 3.3))
    for i, t in enumerate(thresholds):
        ax = fig.add_subplot(1, len(thresholds), i + 1)
        ax.plot([0, 1], [0, 1], color="0.7", lw=1)
        for key, style in (("before", "o--"), ("after", "s-")):
            block = result[key]["ece"][t]
            pts = [(b["mean_predicted"], b["observed"]) for b in block["bins"] if b["count"]]
            ax.plot(*zip(*pts), style, ms=4, label=f"{key}: ECE {block['ece']:.3f}")
        ax.set_title(f"P(age ≥ {t}), test")
        ax.set_xlabel("predicted")
        ax.set_ylabel("observed share" if i == 0 else "")
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_coverage(result: dict[str, Any], path: Path) -> Path:
    decades = list(result["after"]["coverage"]["decade"])
    x = np.arange(len(decades))
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    for offset, key in ((-0.2, "before"), (0.2, "after")):
        values = [result[key]["coverage"]["decade"][d]["coverage"] for d in decades]
        ax.bar(x + offset, values, width=0.4, label=key)
    ax.axhspan(0.78, 0.82, color="green", alpha=0.15, label="80 % ± 2")
    ax.set_xticks(x, [f"{d}\nn={result['after']['coverage']['decade'][d]['n']}" for d in decades], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("coverage of the 80 % interval")
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_assurance_plots(result: dict[str, Any], out: Path) -> list[Path]:
    return [plot_reliability(result, Path(out) / "reliability.png"), plot_coverage(result, Path(out) / "coverage.png")]
