"""Video file page: upload a clip → every face tracked through it, an annotated MP4 and one row per person.

The analysis is the library's (``agegender.video.analysis``, the live page's tracker); this page picks the file and how
many frames to analyse, shows progress, and keeps the newest result for reruns (downloads, settings).
"""

from __future__ import annotations

import streamlit as st

from app.estimator_cache import load_estimator
from app.settings import page_setup
from app import video

settings = page_setup("Video file")
st.title("Video file")
st.caption(f"MP4, WebM, MOV, AVI, MKV or MPEG-TS up to {video.MAX_VIDEO_MB} MB and {video.MAX_DURATION_S / 60:.0f} minutes. "
           "Faces are tracked from frame to frame; the annotated video and the table stay in memory until you "
           "download them.")
estimator = load_estimator(settings)

uploaded = st.file_uploader("Video", type=video.VIDEO_TYPES, key="video_file", max_upload_size=video.MAX_VIDEO_MB,
                            help=f"Up to {video.MAX_VIDEO_MB} MB. The sound is dropped.")
every = st.select_slider("Frames to analyse", options=video.EVERY_CHOICES, value=5, key="video_every",
                         format_func=video.every_label,
                         help="The model runs on these frames; on the others each box moves on with its face. "
                              "Fewer analysed frames: faster, but quick movements may split a track.")

if uploaded is None:
    st.info("Drop a video above, choose how many frames to analyse, then press **Analyse**.")
else:
    data = uploaded.getvalue()
    info, error = video.probe(data, uploaded.name)
    if error:
        st.error(video.md_safe(error))
    else:
        st.caption(video.info_line(info, len(data), every))
        key = (video.digest_of(data), settings.estimator_key, every, settings.show_labels)
        result = video.cached_result(key)
        if st.button("Analyse", type="primary", key="video_analyse", disabled=result is not None) and result is None:
            result, error = video.run_analysis(data, uploaded.name, estimator, every, settings.show_labels, key)
            if error:
                st.error(video.md_safe(error))
        if result is not None:
            brief = len(result.tracks) - len(result.people(2))
            show_brief = st.toggle(f"Also list {brief} track{'s' if brief != 1 else ''} seen in one analysed frame "
                                   "only (usually false detections)", key="video_show_brief") if brief else False
            video.render_result(result, uploaded.name, show_brief)
