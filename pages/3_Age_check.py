"""Age check page: one photo or snapshot → for each face P(age ≥ t) and a pass / ask-for-ID decision.

The decision uses a buffer policy (like "Challenge 25" in UK retail): the model's estimate must clear the
threshold by a margin, because a photo-based age estimate is off by several years for many people.
"""

from __future__ import annotations

import streamlit as st

from app.age_check import age_check
from app.analysis import MAX_UPLOAD_MB, UPLOAD_TYPES, analyse_cached, regroup
from app.cards import annotated_picture
from app.estimator_cache import load_estimator
from app.report_data import entry_metrics, error_at_age, manifest_models, over_18, report_for_model
from app.settings import PRIVACY, page_setup

THRESHOLDS: list[int | str] = [18, 21, 25, "other"]

settings = page_setup("Age check")
st.title("Age check")
st.caption("Is each person at least *t* years old? " + PRIVACY)
estimator = load_estimator(settings)

c1, c2, c3 = st.columns([1, 1, 2])
choice = c1.selectbox("Minimum age t", THRESHOLDS, key="agecheck_threshold",
                      format_func=lambda t: "other…" if t == "other" else f"{t} years")
if choice == "other":
    threshold = int(c2.number_input("t (years)", min_value=0, max_value=100, value=18, step=1,
                                    key="agecheck_custom"))
else:
    threshold = int(choice)
buffer = int(c3.slider("Buffer (years)", 0, 15, 7, key="agecheck_buffer",
                       help="Pass only if the estimate is at least t + buffer. 7 with t = 18 is 'Challenge 25'."))

st.markdown(
    f"**Policy.** *Pass* only if **both** hold: the expected age is at least **t + buffer = {threshold + buffer}**, "
    f"and the lower end of the 80 % interval is at least **t = {threshold}** (the model gives at most a 10 % "
    "chance that the person is younger than t). Otherwise: **ask for ID**."
)

source = st.radio("Photo", ["Upload a photo", "Take a snapshot"], horizontal=True, key="agecheck_source",
                  label_visibility="collapsed")
if source == "Upload a photo":
    item = st.file_uploader("Photo", type=UPLOAD_TYPES, key="agecheck_file", max_upload_size=MAX_UPLOAD_MB)
else:
    item = st.camera_input("Snapshot", key="agecheck_camera")

report_entry = report_for_model(settings.model)
report = report_entry[1] if report_entry else None

if item is None:
    st.info("Upload a photo or take a snapshot to check the ages of the faces in it.")
else:
    result = analyse_cached(item.getvalue(), item.name, estimator, settings)
    if result.error:
        st.error(f"**{result.name}**: {result.error}")
    else:
        faces = regroup(result, estimator, settings.preset)
        left, right = st.columns([3, 2])
        left.image(annotated_picture(result, faces, settings.show_labels), width="stretch")
        with right:
            if not faces:
                st.info(f"No face found in {result.name}.")
            for face in faces:
                decision = age_check(face, threshold, buffer)
                with st.container(border=True, key=f"agecheck-{face.index}"):
                    a, b = st.columns([1, 3])
                    if face.crop is not None:
                        a.image(face.crop, width=96)
                    b.markdown(f"**Face {face.index}** · P(age ≥ {threshold}) = **{decision.p_at_least:.0%}**  \n"
                               f"Estimated age **{face.age:.0f}**, 80 % interval "
                               f"{face.age_low:.0f}–{face.age_high:.0f}")
                    if decision.passed:
                        st.success(f"Face {face.index}: **Pass**: {decision.reason}", icon=":material/check_circle:")
                    else:
                        st.warning(f"Face {face.index}: **Ask for ID**: {decision.reason}", icon=":material/badge:")

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
    "This is a screening aid: only an ID document proves an age."
)
