"""The engine interface shared by the torch and onnxruntime implementations."""

from __future__ import annotations

import importlib.util
from typing import Protocol

import numpy as np

ENGINE_NAMES = ("auto", "onnx", "torch")
EngineOutput = tuple[np.ndarray, np.ndarray]
"""(age_probs (N, 101) float32, p_female (N,) float32)."""


class Engine(Protocol):
    """Runs one age/gender network on uint8 RGB crops of shape (N, S, S, 3), S = ``input_size``."""

    name: str
    input_size: int

    def run(self, crops: np.ndarray) -> EngineOutput:
        """Probabilities for one forward pass; callers keep N small (see ``Estimator``'s batching)."""
        ...

    def describe(self) -> dict:
        """What runs: engine, precision, threads, file — for ``Estimator.info()`` and the benchmarks."""
        ...


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (torch alone takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def onnxruntime_available() -> bool:
    return _installed("onnxruntime")


def torch_available() -> bool:
    return _installed("torch")
