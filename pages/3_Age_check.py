"""Age check page: one photo or snapshot → for each face P(age ≥ t) and a pass / ask-for-ID decision.

The decision is the library's (:meth:`agegender.Face.age_check`, rule in :mod:`agegender.assurance.age_check`); this page
only collects the threshold and buffer, shows the decisions with the group summary, and the policy table that
was measured on the test splits (``reports/age-assurance-<model>/``), so the user sees what a buffer costs. By
default every bundled model of the validated consensus must pass (:mod:`agegender.assurance.consensus`,
``reports/age-assurance-consensus/``); the toggle turns it off for the sidebar's model alone.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.analysis import MAX_UPLOAD_MB, UPLOAD_TYPES, analyse_cached, regroup
from app.cards import annotated_picture, escape_markdown
from app.estimator_cache import consensus_available, load_consensus_estimator, load_estimator
from app.report_data import entry_metrics, error_at_age, manifest_models, over_18, report_for_model
from app.settings import PRIVACY, page_setup
from agegender.assurance.age_check import DEFAULT_BUFFERS, default_buffer, summary, whole_years as years
from agegender.evaluation.assurance import load_assurance
from agegender.evaluation.consensus import load_consensus_report
from agegender.evaluation.policy import display_rows

THRESHOLDS: list[int | str] = [18, 21, 25, "other"]
MAX_BUFFER = 20

settings = page_setup("Age check")
st.title("Age check")
st.caption("Is each person at least *t* years old? " + PRIVACY)
estimator = load_estimator(settings)
panel = None
if estimator.trained and consensus_available() and st.toggle(
        "Second opinion: every bundled model must pass", value=True, key="agecheck_consensus",
        on_change=lambda: st.session_state.pop("agecheck_buffer", None),  # back to the new setting's validated buffer
        help="Each face is also estimated by the other bundled model(s) and passes only if all of them pass, "
             "each under its own validated buffer. The only setting that met the 1 % false-pass bar for "
             "13–17-year-olds at t = 18 on validation; 5-6 times the time of one model per photo."):
    panel = load_consensus_estimator(settings)
if panel is not None:
    estimator = panel

c1, c2, c3 = st.columns([1, 1, 2])
choice = c1.selectbox("Minimum age t", THRESHOLDS, key="agecheck_threshold",
                      format_func=lambda t: "other…" if t == "other" else f"{t} years")
if choice == "other":
    threshold = int(c2.number_input("t (years)", min_value=0, max_value=100, value=18, step=1,
                                    key="agecheck_custom"))
else:
    threshold = int(choice)
buffers = estimator.validated_buffers or DEFAULT_BUFFERS  # this model's own, when it has them
validated = default_buffer(threshold, buffers)
buffer = int(c3.slider("Buffer (years)", 0, MAX_BUFFER, validated, key="agecheck_buffer",
                       help=f"Pass only if the estimate is at least t + buffer. Validated defaults"
                            f"{'' if estimator.validated_buffers else ' (of the default model: this one has none)'}: "
                            f"{', '.join(f't = {t}: {b}' for t, b in buffers.items())} (the smallest "
                            "buffer that kept false passes of people 1-5 years under t at about 1 % on validation)."))

if panel is not None:
    rule = (f"**Policy.** *Pass* only if **every model** passes: {panel.describe_policy(threshold, buffer)} (its "
            "expected age at least t + its buffer; the slider sets the first model's, the others keep their "
            f"validated difference), and each model's 80 % interval starts at **t = {threshold}** or later. "
            "Otherwise: **ask for ID**.")
else:
    rule = (f"**Policy.** *Pass* only if **both** hold: the expected age is at least **t + buffer = "
            f"{threshold + buffer}**, and the lower end of the 80 % interval is at least **t = {threshold}** (the "
            "model gives at most about a 10 % chance that the person is younger than t). Otherwise: **ask for ID**.")
st.markdown(rule + ("" if threshold in buffers else f" t = {threshold} was not measured; the default buffer is "
                    "the largest validated one."))

source = st.radio("Photo", ["Upload a photo", "Take a snapshot"], horizontal=True, key="agecheck_source",
                  label_visibility="collapsed")
if source == "Upload a photo":
    item = st.file_uploader("Photo", type=UPLOAD_TYPES, key="agecheck_file", max_upload_size=MAX_UPLOAD_MB)
else:
    item = st.camera_input("Snapshot", key="agecheck_camera")

if item is None:
    st.info("Upload a photo or take a snapshot to check the ages of the faces in it.")
else:
    result = analyse_cached(item.getvalue(), item.name, estimator, settings)
    if result.error:
        st.error(f"**{escape_markdown(result.name)}**: {escape_markdown(result.error)}")
    else:
        faces = regroup(result, estimator, settings.preset)
        decisions = [face.age_check(threshold, buffer) for face in faces]
        if faces:
            st.subheader(f"{summary(decisions)} (t = {threshold}, buffer {buffer})", anchor=False)
        left, right = st.columns([3, 2])
        left.image(annotated_picture(result, faces, settings.show_labels), width="stretch")
        with right:
            if not faces:
                st.info(f"No face found in {escape_markdown(result.name)}: nothing to check, ask for ID.")
            for face, decision in zip(faces, decisions):
                with st.container(border=True, key=f"agecheck-{face.index}"):
                    a, b = st.columns([1, 3])
                    if face.crop is not None:
                        a.image(face.crop, width=96)
                    b.markdown(f"**Face {face.index}** · P(age ≥ {threshold}) = **{decision.p_at_least:.0%}**  \n"
                               f"Estimated age **{years(face.age)}**, 80 % interval "
                               f"{years(face.age_low)}–{years(face.age_high)}"
                               + ("" if face.calibrated else " (uncalibrated)")
                               + "".join(f"  \n{o.model}: {years(o.age)} ({years(o.age_low)}–{years(o.age_high)}), "
                                         f"{'pass' if o.passed else 'ask for ID'} at buffer {o.buffer}"
                                         for o in decision.opinions))
                    if decision.passed:
                        st.success(f"Face {face.index}: **Pass**: {decision.reason}", icon=":material/check_circle:")
                    else:
                        st.warning(f"Face {face.index}: **Ask for ID**: {decision.reason}", icon=":material/badge:")

st.subheader("What this policy does, measured", divider="gray")
assurance = load_consensus_report() if panel is not None else load_assurance(estimator.model_name)
rows = display_rows(assurance["policy"]["table"], threshold) if assurance else []
if rows:
    if panel is not None:  # the buffers of every model beside the first one's
        raw = sorted((r for r in assurance["policy"]["table"] if r["threshold"] == threshold), key=lambda r: r["buffer"])
        rows = [{**r, "buffers": " / ".join(f"{m} {b}" for m, b in raw_row["buffers"].items())}
                for r, raw_row in zip(rows, raw)]
    frame = pd.DataFrame([{"": "◀ current" if r["buffer"] == buffer else "",
                           **{k: f"{v:.1%}" if isinstance(v, float) else ("–" if v is None else v)
                              for k, v in r.items()}} for r in rows]).set_index("buffer")
    st.caption(f"Test splits (UTKFace test crops + All-Age-Faces test photos, {assurance['n']} faces, calibrated "
               f"model{'s, every one must pass' if panel is not None else ''}); default buffers chosen on validation. False pass: people under t who pass; asked for ID: "
               "people well above t who are asked anyway.")
    st.dataframe(frame, width="stretch")
else:
    st.info(f"The policy has not been measured for this model and t = {threshold}: its false-pass rate is "
            "unknown. Assume that minors who look older pass.")

report_entry = report_for_model(settings.model)
report = report_entry[1] if report_entry else None
st.subheader("Limits", divider="gray")
measured = error_at_age(report, threshold)
if measured is not None:
    extra = report.get("extra") or {}
    where = f"{extra.get('dataset', report_entry[0])}, {extra.get('mode', '?')}"
    error_line = (f"On its evaluation report ({where}), this model's mean absolute error for ages {measured[1]} "
                  f"is **{measured[0]:.1f} years**")
    far = over_18(report).get("false_adult_rate")
    if threshold == 18 and isinstance(far, (int, float)):
        error_line += f"; it judged {far:.1%} of minors to be adults (false-adult rate)"
    error_line += "."
else:
    overall = entry_metrics(manifest_models().get(settings.model or "")).get("mae")
    error_line = ("The model's error at this age has **not been measured** (no evaluation report for this model)"
                  + (f"; its mean absolute error over all ages is {overall:.1f} years, and it differs by age"
                     if isinstance(overall, (int, float)) else "")
                  + ": assume several years either way.")
st.markdown(
    f"- {error_line}\n"
    "- A photo of a photo or of a screen, heavy make-up, filters, hats, masks, strong or coloured light, blur "
    "and unusual angles all push the estimate off, and the model cannot tell a printed face from a real one.\n"
    "- The estimate is how old someone *looks*; people near the threshold are exactly those it cannot separate. "
    "This is a screening aid: only an ID document proves an age. See MODEL_CARD.md for what the numbers do not "
    "promise."
)
