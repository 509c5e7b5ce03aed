"""Home page of the agegender Streamlit app (``streamlit run streamlit_app.py``).

The other screens are the scripts in ``pages/``; each starts with ``ui.page_setup`` so the sidebar (page
links and the shared settings: model, detector, age groups, score, labels) is the same everywhere and its
values persist across pages.
"""

from __future__ import annotations

import streamlit as st

import ui

settings = ui.page_setup("Home")
st.title("agegender")
st.markdown(
    "Finds **every face** in a photo or a live camera stream and estimates each one's **age** (a probability for "
    "every year from 0 to 100, shown as an expected age, an 80 % interval and age groups) and **gender** (with "
    "its confidence). Faces are found with MediaPipe's BlazeFace detectors and estimated by a PyTorch network "
    "trained on UTKFace and All-Age-Faces, all on the CPU."
)
links = {
    "pages/1_Upload_photos.py": "**Upload photos**: many images at once, a card per face, CSV / JSON / zip",
    "pages/2_Live_camera.py": "**Live camera**: boxes and smoothed labels on your webcam stream, or a snapshot",
    "pages/5_Video_file.py": "**Video file**: every face tracked through a clip, an annotated video, one row per person",
    "pages/3_Age_check.py": "**Age check**: is each person at least 18 / 21 / 25? With a safety buffer",
    "pages/4_Model_report.py": "**Model report**: accuracy, confusion matrix, errors by group, calibration",
}
icons = {script: icon for script, _, icon in ui.PAGES}
for script, label in links.items():
    st.page_link(script, label=label, icon=icons[script])
st.info(ui.PRIVACY, icon=":material/lock:")
if settings.model is None:
    st.warning(ui.UNTRAINED_WARNING, icon="⚠️")
st.caption("An estimate from a face says how old someone *looks* and which gender they *present*: it can be wrong, "
           "and it must not be the only basis of a decision about a person.")
