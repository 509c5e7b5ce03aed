"""Compatibility shim: the report plots live in :mod:`agegender.evaluation.plots` now."""

from .evaluation.plots import *  # noqa: F401,F403
from .evaluation.plots import write_plots  # noqa: F401
