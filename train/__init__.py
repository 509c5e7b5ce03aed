"""Training, evaluation and calibration scripts for agegender (``python -m train ...``)."""
