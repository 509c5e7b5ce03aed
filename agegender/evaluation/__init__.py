"""Measure an :class:`~agegender.Estimator` on labelled faces, and the ``agegender evaluate`` command.

One job per module: :mod:`.metrics` (accuracy numbers from labels and outputs), :mod:`.samples` (labelled
inputs), :mod:`.pasting` (the ``pasted`` mode's canvases), :mod:`.runner` (:func:`evaluate`), :mod:`.report`
and :mod:`.plots` (report folder), :mod:`.cli` (the command), and for age assurance :mod:`.calibration`
(fit/measure the calibrated uncertainty), :mod:`.policy` (measure the age-check rule) and :mod:`.assurance`
(validation fit → test measurement).
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use (PEP 562): ``agegender --help`` registers the evaluate command through
# :mod:`.cli_args` without loading OpenCV, Matplotlib or SciPy.
_EXPORTS = {
    "headline_metrics": ".cli", "record_in_manifest": ".cli", "run_cli": ".cli", "write_age_probs": ".cli",
    "register_cli": ".cli_args",
    "ADULT_AGE": ".metrics", "DEFAULT_PRESETS": ".metrics", "RACE_NAMES": ".metrics",
    "NothingToEvaluate": ".metrics", "compute_metrics": ".metrics",
    "match_box": ".pasting", "paste_chip": ".pasting", "pasted_canvas": ".pasting",
    "summary_markdown": ".report", "write_predictions": ".report", "write_report": ".report",
    "MODES": ".runner", "evaluate": ".runner", "metrics_from_rows": ".runner", "run_info": ".runner",
    "Labelled": ".samples", "LabelledImage": ".samples", "labelled_folder_images": ".samples",
    "read_labels_csv": ".samples", "subset": ".samples",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agegender.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
