"""Home page of the agegender Streamlit app (``streamlit run streamlit_app.py``).

The other screens are the scripts in ``pages/``; each starts with ``app.settings.page_setup`` so the sidebar (page
links and the shared settings: model, detector, age groups, score, labels) is the same everywhere and its
values persist across pages.
"""

from __future__ import annotations

import streamlit as st

from app.estimator_cache import UNTRAINED_WARNING
from app.settings import PAGES, PRIVACY, page_setup

settings = page_setup("Home")
st.title("agegender")
st.markdown(
    "Finds **every face** in a photo or a live camera stream and estimates each one's **age** (a probability for "
    "every year from 0 to 100, shown as an expected age, an 80 % interval and age groups) and **gender** (with "
    "its confidence). Faces are found with MediaPipe's BlazeFace detectors and estimated by a neural network (ONNX Runtime) "
    "trained on UTKFace and All-Age-Faces, all on the CPU."
)
DESCRIPTIONS = {
    "pages/1_Upload_photos.py": "Many photos at once (or a sample): a card per face, a crowd summary, CSV / JSON / zip.",
    "pages/2_Live_camera.py": "Boxes and smoothed labels on your webcam stream, or a snapshot.",
    "pages/5_Video_file.py": "Every face tracked through a clip: an annotated video and one row per person.",
    "pages/3_Age_check.py": "Is each person at least 18 / 21 / 25? With a safety buffer.",
    "pages/4_Model_report.py": "Accuracy, confusion matrix, errors by group, calibration, training curves.",
}
for script, label, icon in PAGES[1:]:  # a short link and its description below: a long link label is cut on phones
    st.page_link(script, label=f"**{label}**", icon=icon)
    st.caption(DESCRIPTIONS[script])
st.info(PRIVACY, icon=":material/lock:")
if settings.model is None:
    st.warning(UNTRAINED_WARNING, icon="⚠️")
st.caption("An estimate from a face says how old someone *looks* and which gender they *present*: it can be wrong, "
           "and it must not be the only basis of a decision about a person.")
