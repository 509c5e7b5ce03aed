"""Upload page: several photos at once (or a sample) → annotated pictures, a card per face, summaries, downloads.

Each file's result appears as soon as it is analysed; a bad file (not an image, corrupt, too large, another
type) gets an error at its place and in a summary at the top, and the batch goes on. Results are memoised per
file content and estimator settings, so a rerun (another age-group preset) does not run the model again.
"""

from __future__ import annotations

import streamlit as st

from app.analysis import MAX_BATCH_MEGAPIXELS, MAX_FILES_PER_BATCH, MAX_UPLOAD_MB, UPLOAD_TYPES_TEXT
from app.estimator_cache import load_estimator
from app.settings import PRIVACY, page_setup
from app.upload import analyse_and_show, batch_footer, chosen_inputs, sample_buttons

settings = page_setup("Upload photos")
st.title("Upload photos")
st.caption("Every face in each photo gets a numbered box and a card. " + PRIVACY)
estimator = load_estimator(settings)

files = st.file_uploader(  # no type filter: it would drop other files silently; the page says why instead
    f"Photos ({UPLOAD_TYPES_TEXT})", accept_multiple_files=True, key="upload_files", max_upload_size=MAX_UPLOAD_MB,
    help=f"Up to {MAX_UPLOAD_MB} MB per file and {MAX_FILES_PER_BATCH} files ({MAX_BATCH_MEGAPIXELS} megapixels) "
         "per upload.",
)
inputs = chosen_inputs(files)
if not inputs:
    st.info("Drop one or more photos above. Group photos work best with the *auto* or *full* detector.")
    sample_buttons()
else:
    results = analyse_and_show(inputs, estimator, settings)
    batch_footer(results, estimator, settings)
