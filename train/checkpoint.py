"""Checkpoints that ``torch.load(..., weights_only=True)`` accepts: tensors, dicts, lists, numbers, strings.

Nothing is pickled as an object (no argparse Namespace, no numpy RNG tuple), so loading a checkpoint never runs
code from it. Files are written to a temporary name and renamed, so a run killed while saving leaves the previous
``last.pt`` intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAST, BEST = "last.pt", "best.pt"


def rng_state() -> dict[str, Any]:
    """Every generator a training step draws from (dropout, mixup; numpy/python for completeness)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def save(payload: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def validated_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a run validated: its EMA if it kept one, else the live model (what export ships and
    ``--init-from`` starts from)."""
    return state["ema"]["module"] if state.get("ema") else state["model"]


def weights_kind(state: dict[str, Any]) -> str:
    """How the manifest and a fine-tune's lineage name :func:`validated_weights`."""
    return "EMA" if state.get("ema") else "final"


def epochs_completed(state: dict[str, Any]) -> float:
    """Epochs trained, counting a run stopped mid-epoch (``--time-budget``) fractionally."""
    return round(state["epoch"] + state["epoch_step"] / state["steps_per_epoch"], 3)


def saved_config(out: str | Path) -> dict[str, Any] | None:
    """The config stored in ``out/last.pt``, or ``None`` when there is nothing to resume."""
    path = Path(out) / LAST
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["config"]  # mmap: reads no tensors
