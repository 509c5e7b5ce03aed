"""The upload page's flow: pick the inputs (uploaded files or a sample), analyse them one by one and show each
file's result as soon as it is done, then the batch's summary, table and downloads.

Why one file at a time: a visitor with 50 photos sees the first cards after one analysis, not after all of
them; a bad file's error appears at its place in the list, and a summary of all errors at the top.
"""

from __future__ import annotations

from typing import Callable, Sequence

import streamlit as st

from agegender import Estimator
from agegender.results import batch_summary

from . import samples
from .analysis import MAX_FILES_PER_BATCH, BatchBudget, ImageResult, analyse_cached
from .cards import escape_markdown, render_error, render_result
from .exports import download_buttons, faces_table, result_records
from .settings import Settings
from .summary import render_summary

Input = tuple[str, Callable[[], bytes]]  # (file name, its bytes on demand)
SAMPLE_KEY = "upload_sample"


def _choose_sample(name: str | None) -> None:
    st.session_state[SAMPLE_KEY] = name


def sample_buttons() -> None:
    """One button per sample picture (none if scikit-image is missing)."""
    if not samples.available():
        return
    st.caption("No photo at hand? Try a sample:")
    cols = st.columns(len(samples.SAMPLES))
    for col, (name, label) in zip(cols, samples.SAMPLES.items(), strict=True):
        col.button(label, key=f"sample-{name}", on_click=_choose_sample, args=(name,), width="stretch")


def chosen_inputs(files: Sequence) -> list[Input]:
    """The uploaded files, or else the chosen sample (uploads win: a sample is only a stand-in)."""
    if files:
        return [(f.name, f.getvalue) for f in files]
    name = st.session_state.get(SAMPLE_KEY)
    if name in samples.SAMPLES:
        left, right = st.columns([4, 1], vertical_alignment="center")
        left.caption(f"Showing the sample **{samples.SAMPLES[name]}**, built from scikit-image's astronaut.")
        right.button("Clear sample", key="sample-clear", on_click=_choose_sample, args=(None,))
        return [(name, lambda: samples.sample_png(name))]
    return []


def analyse_and_show(inputs: Sequence[Input], estimator: Estimator, settings: Settings) -> list[ImageResult]:
    """Analyse and render the inputs one by one; return their results (in order)."""
    status = st.empty()
    top = st.container()
    skipped = list(inputs[MAX_FILES_PER_BATCH:])
    inputs = list(inputs[:MAX_FILES_PER_BATCH])
    if skipped:
        names = ", ".join(escape_markdown(n) for n, _ in skipped[:10]) + (" …" if len(skipped) > 10 else "")
        top.warning(f"At most {MAX_FILES_PER_BATCH} files are analysed per upload; {len(skipped)} more were "
                    f"skipped: {names}. Upload them in another batch.")
    budget = BatchBudget()
    results: list[ImageResult] = []
    n = len(inputs)
    for i, (name, read) in enumerate(inputs):
        status.progress(i / n, text=f"Analysing {escape_markdown(name)} ({i + 1}/{n})…")
        data = read()
        refused = budget.refuse(data)
        if refused:
            result = ImageResult(name, "", error=refused)
            render_error(result)
        else:
            result = analyse_cached(data, name, estimator, settings)
            render_result(result, estimator, settings, key=f"up{i}")
        results.append(result)
    n_faces = sum(len(r.faces) for r in results)
    bad = [r for r in results if r.error is not None]
    status.progress(1.0, text=f"Done: {n} file{'s' if n != 1 else ''}, {n_faces} face{'s' if n_faces != 1 else ''}"
                              + (f", {len(bad)} not analysed" if bad else ""))
    if bad:
        names = ", ".join(f"**{escape_markdown(r.name)}**" for r in bad[:10]) + (" …" if len(bad) > 10 else "")
        top.error(f"{len(bad)} of {n} file{'s' if n != 1 else ''} could not be analysed: {names}. "
                  "Each one's reason is shown at its place below.")
    return results


def batch_footer(results: Sequence[ImageResult], estimator: Estimator, settings: Settings) -> None:
    """The whole upload's crowd summary (for two or more photos), the table of all faces and the downloads."""
    records = result_records(results, estimator, settings, include_age_probs=False)
    analysed = [r for r in results if r.error is None]
    if len(analysed) >= 2:
        st.subheader("All photos together", divider="gray")
        render_summary(batch_summary(records), key="batch", images=len(analysed))
    if any(r.faces for r in analysed):
        st.subheader("All faces", divider="gray")
        st.dataframe(faces_table(records), hide_index=True, width="stretch")
    if results:
        download_buttons(results, settings, estimator)
