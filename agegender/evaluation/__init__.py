"""Measure an :class:`~agegender.Estimator` on labelled faces, and the ``agegender evaluate`` command.

One job per module: :mod:`.metrics` (accuracy numbers from labels and outputs), :mod:`.samples` (labelled
inputs), :mod:`.pasting` (the ``pasted`` mode's canvases), :mod:`.runner` (:func:`evaluate`), :mod:`.report`
and :mod:`.plots` (report folder), :mod:`.cli` (the command), and for age assurance :mod:`.calibration`
(fit/measure the calibrated uncertainty), :mod:`.policy` (measure the age-check rule) and :mod:`.assurance`
(validation fit → test measurement).
"""

from .cli import headline_metrics, record_in_manifest, register_cli, run_cli, write_age_probs
from .metrics import ADULT_AGE, DEFAULT_PRESETS, RACE_NAMES, NothingToEvaluate, compute_metrics
from .pasting import match_box, paste_chip, pasted_canvas
from .report import summary_markdown, write_predictions, write_report
from .runner import MODES, evaluate, metrics_from_rows, run_info
from .samples import Labelled, LabelledImage, labelled_folder_images, read_labels_csv, subset

__all__ = [
    "ADULT_AGE", "DEFAULT_PRESETS", "Labelled", "LabelledImage", "MODES", "NothingToEvaluate", "RACE_NAMES",
    "compute_metrics", "evaluate", "headline_metrics", "labelled_folder_images", "match_box", "metrics_from_rows",
    "paste_chip", "pasted_canvas", "read_labels_csv", "record_in_manifest", "register_cli", "run_cli", "run_info",
    "subset", "summary_markdown", "write_age_probs", "write_predictions", "write_report",
]
