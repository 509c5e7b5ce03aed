"""Upload page: several photos at once → annotated pictures, one card per face, a table and downloads.

A bad file (not an image, corrupt, too large) gets an error of its own and the batch goes on. Results are
memoised per file content and estimator settings, so a rerun (another age-group preset, a download click)
does not run the model again.
"""

from __future__ import annotations

import streamlit as st

import ui

settings = ui.page_setup("Upload photos")
st.title("Upload photos")
st.caption("Every face in each photo gets a numbered box and a card. " + ui.PRIVACY)
estimator = ui.load_estimator(settings)

files = st.file_uploader(
    "Photos (JPG, PNG, WebP, BMP)", type=ui.UPLOAD_TYPES, accept_multiple_files=True, key="upload_files",
    max_upload_size=ui.MAX_UPLOAD_MB, help=f"Up to {ui.MAX_UPLOAD_MB} MB per file; several files at once.",
)

if not files:
    st.info("Drop one or more photos above. Group photos work best with the *auto* or *full* detector.")
else:
    progress = st.progress(0.0, text="Analysing…")
    results: list[ui.ImageResult] = []
    for i, uploaded in enumerate(files):
        progress.progress(i / len(files), text=f"Analysing {uploaded.name} ({i + 1}/{len(files)})…")
        results.append(ui.analyse_cached(uploaded.getvalue(), uploaded.name, estimator, settings))
    n_faces = sum(len(r.faces) for r in results)
    n_bad = sum(r.error is not None for r in results)
    progress.progress(1.0, text=f"Done: {len(files)} file{'s' if len(files) != 1 else ''}, {n_faces} "
                                f"face{'s' if n_faces != 1 else ''}" + (f", {n_bad} unreadable" if n_bad else ""))

    for i, result in enumerate(results):
        ui.render_result(result, estimator, settings, key=f"up{i}")

    good = [r for r in results if r.error is None]
    if n_faces:
        st.subheader("All faces", divider="gray")
        st.dataframe(ui.faces_table(good), hide_index=True, width="stretch")
    if good:
        ui.download_buttons(good, settings, estimator)
