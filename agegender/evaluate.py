"""Compatibility shim: the evaluation lives in the :mod:`agegender.evaluation` package now."""

from .evaluation import *  # noqa: F401,F403
from .evaluation import __all__  # noqa: F401
