"""What a run leaves to read: ``train.log``, ``metrics.csv`` (one row per validation) and ``curves.png``.

Only rank 0 writes; other ranks get a logger that drops everything, so code can log unconditionally.
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

METRICS, LOG, CURVES = "metrics.csv", "train.log", "curves.png"


def setup_logger(out: Path, is_main: bool) -> logging.Logger:
    log = logging.getLogger("train")
    for handler in list(log.handlers):  # a previous run in this process (tests)
        handler.close()
        log.removeHandler(handler)
    log.propagate = False
    if not is_main:
        log.addHandler(logging.NullHandler())
        return log
    log.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    for handler in (logging.FileHandler(out / LOG), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    return log


def append_metrics(out: Path, row: dict[str, float | int | str]) -> None:
    """Append a row; the header is written once, when the file is created (a resumed run keeps appending)."""
    path = out / METRICS
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_metrics(out: Path) -> list[dict[str, float]]:
    path = out / METRICS
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def plot_curves(out: Path) -> None:
    """Redraw ``curves.png`` from ``metrics.csv``: losses, val MAE per set, val gender accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(out)
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, label in (("train_loss", "total"), ("train_age_loss", "age"), ("train_gender_loss", "gender")):
        axes[0].plot(epochs, [r[key] for r in rows], marker=".", label=label)
    axes[0].set(title="training loss", xlabel="epoch")
    for key in [k for k in rows[-1] if k.startswith("val_mae")]:
        axes[1].plot(epochs, [r.get(key, float("nan")) for r in rows], marker=".",
                     label=key.removeprefix("val_mae_") if key != "val_mae" else "combined")
    axes[1].set(title="validation MAE (years)", xlabel="epoch")
    for key in [k for k in rows[-1] if k.startswith("val_gender_acc")]:
        axes[2].plot(epochs, [r.get(key, float("nan")) for r in rows], marker=".",
                     label=key.removeprefix("val_gender_acc_") if key != "val_gender_acc" else "combined")
    axes[2].set(title="validation gender accuracy", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / CURVES, dpi=100)
    plt.close(fig)
