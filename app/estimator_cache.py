"""The one cached :class:`agegender.Estimator` per (model, detector, score), shared by every session.

Why a cache: loading the detector and the network takes seconds; an Estimator is thread-safe, so all visitors
share it. Faces per image are capped here (:data:`MAX_FACES_PER_IMAGE`) so one crowded picture cannot hold the
server for minutes or fill its memory.
"""

from __future__ import annotations

import warnings

import streamlit as st

from agegender import AgeGenderError, Estimator
from agegender.assurance.consensus import ConsensusEstimator, consensus_policy

from .settings import UNTRAINED_FALLBACK, Settings

MAX_FACES_PER_IMAGE = 60  # the faces with the highest detection scores; the page says when a photo hits it
UNTRAINED_WARNING = ("**The model is untrained.** No trained weights are bundled in `weights/` yet, so the app "
                     "runs a randomly initialised network: faces are found correctly, but every age and gender "
                     "shown is meaningless. Train and export a model (see the README) to fix this.")


@st.cache_resource(max_entries=4, show_spinner="Loading the face detector and the age/gender model…")
def _cached_estimator(model: str | None, detector: str, min_score: float) -> Estimator:
    """One Estimator per (model, detector, min_score), shared by all sessions (it is thread-safe)."""
    if model is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the page shows its own, more visible warning
            return Estimator(UNTRAINED_FALLBACK, detector=detector, min_score=min_score, weights=None,
                             max_faces=MAX_FACES_PER_IMAGE)
    return Estimator(model, detector=detector, min_score=min_score, max_faces=MAX_FACES_PER_IMAGE)


def load_estimator(settings: Settings) -> Estimator:
    """The cached estimator for ``settings``; shows the untrained warning, stops the page on a weights error."""
    try:
        estimator = _cached_estimator(*settings.estimator_key)
    except (AgeGenderError, ValueError) as exc:
        st.error(f"The model could not be loaded: {exc}")
        st.stop()
    if not estimator.trained:
        st.warning(UNTRAINED_WARNING, icon="⚠️")
    return estimator


@st.cache_resource(max_entries=2, show_spinner="Loading the models of the age-check consensus…")
def _cached_consensus(detector: str, min_score: float) -> ConsensusEstimator:
    """The bundled models that must all pass a face (agegender.assurance.consensus), shared by all sessions."""
    return ConsensusEstimator(detector=detector, min_score=min_score, max_faces=MAX_FACES_PER_IMAGE)


def consensus_available() -> bool:
    """Whether a validated consensus is installed and all its models are bundled."""
    try:
        return consensus_policy() is not None
    except AgeGenderError:
        return False


def load_consensus_estimator(settings: Settings) -> ConsensusEstimator | None:
    """The cached consensus for the sidebar's detector settings, or None (with a message) if it cannot load."""
    try:
        return _cached_consensus(settings.detector, round(float(settings.min_score), 3))
    except (AgeGenderError, ValueError) as exc:
        st.error(f"The second model could not be loaded, so each face is checked by one model: {exc}")
        return None
