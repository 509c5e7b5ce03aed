"""Altair charts of one face (group probabilities) and of a group of faces (the crowd summary)."""

from __future__ import annotations

from typing import Any, Mapping

import altair as alt
import pandas as pd

from agegender import Face


def group_chart(face: Face, height: int = 150) -> alt.Chart:
    """Bar chart of the face's group probabilities in the preset's order; the most likely group stands out."""
    top = face.top_group[0]
    df = pd.DataFrame({"group": list(face.groups), "probability": list(face.groups.values())})
    df["top"] = df["group"] == top
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("group:N", sort=list(face.groups), title=None, axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
            y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title=None),
            color=alt.condition(alt.datum.top, alt.value("#0072B2"), alt.value("#9BB8CF")),
            tooltip=["group", alt.Tooltip("probability:Q", format=".1%")],
        )
        .properties(height=height)
    )


def _counts_chart(counts: Mapping[str, int], title: str, height: int) -> alt.Chart:
    order = list(counts)
    df = pd.DataFrame({"bin": order, "faces": [int(v) for v in counts.values()]})
    return (
        alt.Chart(df)
        .mark_bar(color="#0072B2")
        .encode(
            x=alt.X("bin:N", sort=order, title=title, axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
            y=alt.Y("faces:Q", title="faces", axis=alt.Axis(tickMinStep=1, format="d")),
            tooltip=[alt.Tooltip("bin:N", title=title), "faces:Q"],
        )
        .properties(height=height)
    )


def age_histogram_chart(summary: Mapping[str, Any], height: int = 180) -> alt.Chart:
    """Faces per decade of expected age (:func:`agegender.results.crowd_summary`'s ``age_histogram``)."""
    return _counts_chart(summary["age_histogram"], "expected age (years)", height)


def age_group_chart(summary: Mapping[str, Any], height: int = 180) -> alt.Chart:
    """Faces per most likely age group, in the preset's order."""
    return _counts_chart(summary["age_groups"], "age group", height)
