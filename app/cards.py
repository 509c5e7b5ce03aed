"""How one analysed image looks on a page: its name, the annotated picture, its crowd summary, a card per face.

File names and error texts are the visitor's own text: they are escaped before they go into Streamlit markdown
(``st.error``, ``st.subheader``), so a name like ``**x** [link](…) :red[y].png`` shows as typed.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Sequence

import numpy as np
import streamlit as st

from agegender import Estimator, Face, annotate
from agegender.results import crowd_summary

from .analysis import ImageResult, regroup
from .charts import group_chart
from .estimator_cache import MAX_FACES_PER_IMAGE
from .settings import Settings
from .summary import render_summary

CROP_WIDTH = 96  # px: the 160 px model input, small beside its text on a desktop and on a phone alike
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=^&])")


def escape_markdown(text: str) -> str:
    """``text`` with every markdown (and Streamlit directive / LaTeX) character backslash-escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def card_text(face: Face) -> str:
    """The card's words; one markdown block so a test can check a card has an age and a gender."""
    label, p = face.top_group
    return (f"**Face {face.index}**  \n"
            f"Age **{face.age:.0f}** (80 % interval {face.age_low:.0f}–{face.age_high:.0f})  \n"
            f"Age group **{label}** ({p:.0%})  \n"
            f"Gender **{face.gender}** ({face.gender_confidence:.0%} confident)")


def face_card(face: Face, key: str) -> None:
    """One face: the exact model input, expected age with its 80 % interval, top group, gender, group chart."""
    with st.container(border=True, key=key):
        # A horizontal container, not columns: columns stack on a phone and the chip would fill the screen.
        with st.container(horizontal=True, vertical_alignment="center", gap="small"):
            if face.crop is not None:
                st.image(face.crop, width=CROP_WIDTH, caption="model input")
            st.markdown(card_text(face))
        st.altair_chart(group_chart(face), width="stretch")


def annotated_picture(result: ImageResult, faces: Sequence[Face], show_labels: bool) -> np.ndarray:
    """The result's downscaled picture with the faces' boxes (scaled to it) drawn on."""
    s = result.scale
    scaled = faces if s == 1.0 else [replace(f, box=tuple(int(round(v * s)) for v in f.box)) for f in faces]
    return annotate(result.display, scaled, show_labels=show_labels)


def render_error(result: ImageResult) -> None:
    st.error(f"**{escape_markdown(result.name)}**: {escape_markdown(result.error)}")


def render_result(result: ImageResult, estimator: Estimator, settings: Settings, key: str,
                  cards_per_row: int = 3) -> None:
    """An analysed image: error, or the annotated picture, a 'no face' note or its summary and a card per face.

    The picture is drawn at its own width but never wider than its column (``width="content"``), so it fits a
    1400 px desktop and a 390 px phone alike."""
    if result.error:
        render_error(result)
        return
    faces = regroup(result, estimator, settings.preset)
    name = escape_markdown(result.name)
    st.subheader(name, divider="gray")
    n = len(faces)
    st.image(annotated_picture(result, faces, settings.show_labels), width="content",
             caption=f"{result.width}×{result.height} px · {n} face{'s' if n != 1 else ''}")
    if not faces:
        st.info(f"No face found in {name}. Try the 'full' detector or a lower minimum detection score.")
        return
    if n >= MAX_FACES_PER_IMAGE:
        st.warning(f"The app analyses at most {MAX_FACES_PER_IMAGE} faces per photo (those the detector is "
                   f"surest of), so {name} may have more. The command line (`agegender predict`) has no limit.")
    if n >= 2:
        render_summary(crowd_summary([f.to_dict() for f in faces]), key=key)
    for start in range(0, n, cards_per_row):
        cols = st.columns(cards_per_row)
        for col, face in zip(cols, faces[start:start + cards_per_row], strict=False):
            with col:
                face_card(face, key=f"facecard-{key}-{face.index}")
