"""Scale-out of inference on an existing engine, Ray Data (the ``[scale]`` extra): :func:`run_batch` and
``agegender batch`` (:mod:`.batch`). Training scales out with ``torchrun`` (``train/``)."""

from agegender.distributed.batch import BatchSummary, run_batch

__all__ = ["BatchSummary", "run_batch"]
