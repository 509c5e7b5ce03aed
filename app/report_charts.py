"""The model report page's charts: confusion matrix, error by slice, calibration, training curves, comparison.

Two rules the earlier charts broke: one bar per report (bars that share a label must not stack into one long
bar), and one axis per kind of number (a learning rate, a loss and an accuracy on one y axis are flat lines).
"""

from __future__ import annotations

import altair as alt
import pandas as pd

BLUE, ORANGE, VERMILION = "#0072B2", "#E69F00", "#D55E00"


def confusion_chart(confusion: list[list[int]], labels: list[str], height: int = 360) -> alt.LayerChart:
    cells = []
    for i, row in enumerate(confusion):
        total = sum(row) or 1
        for j, count in enumerate(row):
            cells.append({"true": labels[i], "predicted": labels[j], "count": count, "share": count / total})
    cm = pd.DataFrame(cells)
    base = alt.Chart(cm).encode(x=alt.X("predicted:N", sort=labels, title="predicted group"),
                                y=alt.Y("true:N", sort=labels, title="true group"))
    heat = base.mark_rect().encode(color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]),
                                                   title="share of row"),
                                   tooltip=["true", "predicted", "count", alt.Tooltip("share:Q", format=".1%")])
    text = base.mark_text(fontSize=11).encode(
        text="count:Q", color=alt.condition(alt.datum.share > 0.5, alt.value("white"), alt.value("black")))
    return (heat + text).properties(height=height)


def slice_chart(df: pd.DataFrame, kind: str, title: str, height: int = 220) -> alt.Chart:
    order = list(df[kind])
    return alt.Chart(df).mark_bar(color=BLUE).encode(
        x=alt.X(f"{kind}:N", sort=order, title=title, axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
        y=alt.Y("mae:Q", title="MAE (years)"),
        tooltip=[kind] + [c for c in ("n", "mae", "bias", "within_5", "gender_accuracy") if c in df],
    ).properties(height=height)


def calibration_chart(bins: pd.DataFrame, height: int = 320) -> alt.LayerChart:
    diagonal = alt.Chart(pd.DataFrame({"p": [0.0, 1.0]})).mark_line(strokeDash=[4, 4], color="gray").encode(
        x="p:Q", y="p:Q")
    points = alt.Chart(bins).mark_line(point=True, color=VERMILION).encode(
        x=alt.X("mean_predicted:Q", title="predicted P(age ≥ 18)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("observed:Q", title="observed share of adults", scale=alt.Scale(domain=[0, 1])),
        tooltip=["bin", "count", alt.Tooltip("mean_predicted:Q", format=".2f"),
                 alt.Tooltip("observed:Q", format=".2f")],
    )
    sizes = alt.Chart(bins).mark_circle(color=VERMILION, opacity=0.4).encode(
        x="mean_predicted:Q", y="observed:Q", size=alt.Size("count:Q", title="faces"))
    return (diagonal + points + sizes).properties(height=height)


def training_curve_charts(long: pd.DataFrame, x: str, height: int = 170) -> list[alt.Chart]:
    """One chart per metric family (loss, MAE, accuracy, learning rate), each with its own y axis and its own
    one-column legend below it, so no label is cut off on a phone. Separate charts rather than one
    concatenated chart, because Streamlit stretches a single chart to its column but not a concatenation."""
    order = [f for f in ("loss", "MAE (years)", "accuracy / share", "learning rate", "other")
             if f in set(long["family"])]
    charts = []
    for family in order:
        part = long[long["family"] == family]
        y_axis = alt.Axis(format="%") if family == "accuracy / share" else alt.Axis(format="~g")
        scale = alt.Scale(type="log") if family == "learning rate" and (part["value"] > 0).all() else \
            alt.Scale(zero=False)
        charts.append(alt.Chart(part, title=family).mark_line(point=True).encode(
            x=alt.X(f"{x}:Q", title=x, axis=alt.Axis(tickMinStep=1) if x == "epoch" else alt.Axis()),
            y=alt.Y("value:Q", title=None, axis=y_axis, scale=scale),
            color=alt.Color("metric:N", legend=alt.Legend(orient="bottom", title=None, columns=1, labelLimit=300)),
            tooltip=[x, "metric", alt.Tooltip("value:Q", format=".4g")],
        ).properties(height=height))
    return charts


def comparison_chart(bars: pd.DataFrame) -> alt.Chart:
    """MAE per report: one bar per report folder (so the four Lite0 crops variants are four bars, not one
    stacked bar), coloured by who made the model."""
    return alt.Chart(bars).mark_bar().encode(
        x=alt.X("MAE (y):Q", title="MAE (years), lower is better"),
        y=alt.Y("report:N", title=None, sort="x", axis=alt.Axis(labelLimit=420)),
        color=alt.Color("who:N", title=None, scale=alt.Scale(domain=["agegender", "peer"], range=[BLUE, ORANGE]),
                        legend=alt.Legend(orient="bottom")),
        tooltip=["report", "model", "dataset", "mode", alt.Tooltip("MAE (y):Q", format=".2f")],
    ).properties(height=alt.Step(26))
