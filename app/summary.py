"""The crowd summary of one photo or of a whole upload: face count, genders, ages, age groups.

The numbers come from :func:`agegender.results.crowd_summary`, the same function that fills the ``summary``
of the CLI's records and of the JSON download, so the page and the files always agree.
"""

from __future__ import annotations

from typing import Any, Mapping

import streamlit as st

from .charts import age_group_chart, age_histogram_chart

METRIC_WIDTH = 110  # px: a horizontal, wrapping row of metrics (two or three per line on a phone, not one)


def render_summary(summary: Mapping[str, Any], key: str, images: int | None = None) -> None:
    """Metrics (photos, faces, female, male, mean age) and two bar charts: faces per age decade and per group."""
    with st.container(border=True, key=f"summary-{key}"):
        with st.container(horizontal=True, wrap=True, gap="medium"):
            if images is not None:
                st.metric("Photos", images, width=METRIC_WIDTH)
            st.metric("Faces", summary["faces"], width=METRIC_WIDTH)
            st.metric("Female", summary["female"], width=METRIC_WIDTH)
            st.metric("Male", summary["male"], width=METRIC_WIDTH)
            mean = summary.get("mean_age")
            st.metric("Mean age", "–" if mean is None else f"{mean:.0f}", width=METRIC_WIDTH)
        if not summary["faces"]:
            return
        left, right = st.columns(2)
        left.altair_chart(age_histogram_chart(summary), width="stretch")
        right.altair_chart(age_group_chart(summary), width="stretch")
