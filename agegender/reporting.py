"""Compatibility shim: report writing lives in :mod:`agegender.evaluation.report` now."""

from .evaluation.report import *  # noqa: F401,F403
from .evaluation.report import PREDICTION_COLUMNS, summary_markdown, write_predictions, write_report  # noqa: F401
