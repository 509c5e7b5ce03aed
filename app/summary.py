"""The crowd summary of one photo or of a whole upload: face count, genders, ages, age groups.

The numbers come from :func:`agegender.results.crowd_summary`, the same function that fills the ``summary``
of the CLI's records and of the JSON download, so the page and the files always agree.
"""

from __future__ import annotations

from typing import Any, Mapping

import streamlit as st

from .charts import age_group_chart, age_histogram_chart


def render_summary(summary: Mapping[str, Any], key: str, images: int | None = None) -> None:
    """Metrics (faces, female, male, mean age) and two bar charts: faces per age decade and per age group."""
    with st.container(border=True, key=f"summary-{key}"):
        cols = st.columns(5 if images is not None else 4)
        if images is not None:
            cols[0].metric("Photos", images)
            cols = cols[1:]
        cols[0].metric("Faces", summary["faces"])
        cols[1].metric("Female", summary["female"])
        cols[2].metric("Male", summary["male"])
        mean = summary.get("mean_age")
        cols[3].metric("Mean age", "–" if mean is None else f"{mean:.0f}")
        if not summary["faces"]:
            return
        left, right = st.columns(2)
        left.altair_chart(age_histogram_chart(summary), width="stretch")
        right.altair_chart(age_group_chart(summary), width="stretch")
