"""Live camera page: the webcam stream through streamlit-webrtc, boxes and smoothed labels per face.

Follows the streamlit-webrtc examples: the frame callback runs in the component's worker thread (never in the
script), heavy objects come from ``st.cache_resource``, and results reach the page through a thread-safe queue
that a fragment polls once a second. A snapshot mode (``st.camera_input``) covers browsers and networks where
WebRTC cannot connect.
"""

from __future__ import annotations

import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from app import live, live_view
from app.analysis import analyse_cached
from app.cards import render_result
from app.estimator_cache import load_estimator
from app.settings import PRIVACY, Settings, page_setup

settings = page_setup("Live camera")
st.title("Live camera")
st.caption("Allow camera access, then press START. Frames are analysed in memory and never recorded. "
           + PRIVACY)
estimator = load_estimator(settings)

mode = st.radio("Mode", ["Live video", "Snapshot"], horizontal=True, key="live_mode",
                help="Use Snapshot when the live video does not start (some networks block WebRTC).")


def analyzer_for(estimator, settings: Settings, min_interval_s: float) -> live.LiveAnalyzer:
    """This session's analyzer, kept across reruns; a new model/detector resets its tracks."""
    analyzer: live.LiveAnalyzer | None = st.session_state.get("_live_analyzer")
    if analyzer is None:
        analyzer = live.LiveAnalyzer(estimator, show_labels=settings.show_labels, min_interval_s=min_interval_s)
        st.session_state["_live_analyzer"] = analyzer
    elif analyzer.estimator is not estimator:
        analyzer.estimator = estimator
        analyzer.reset()
    analyzer.show_labels = settings.show_labels
    analyzer.min_interval_s = min_interval_s
    return analyzer


def rtc_configuration() -> dict | None:
    """ICE servers from ``st.secrets`` ([webrtc] table, see README); none at all by default (localhost/LAN)."""
    try:
        secrets = st.secrets.to_dict()
    except Exception:  # no secrets.toml: that is the default, not an error
        secrets = {}
    try:
        servers = live.ice_servers_from_secrets(secrets)
    except (TypeError, ValueError) as exc:
        st.error(f"Ignoring the [webrtc] secrets: {exc}")
        servers = []
    return None if servers is None else {"iceServers": servers}


RATES = {0: "As often as the CPU allows", 100: "Up to 10 frames a second", 200: "Up to 5 frames a second",
         500: "Up to 2 frames a second", 1000: "One frame a second"}

if mode == "Live video":
    video_col, side_col = st.columns([3, 2], gap="medium")
    with side_col:
        interval_ms = st.selectbox(
            "How often to analyse a frame", list(RATES), format_func=RATES.get, key="live_interval",
            help="Between analysed frames each box moves on with its face's speed, so the video stays fluid on a "
                 "slow CPU.")
        st.caption("Labels read `#track gender age (frames seen)`; ages and P(female) are smoothed over frames "
                   "(EMA) so they do not flicker. If START spins forever, your network blocks WebRTC: use "
                   "Snapshot, or configure a TURN server (README).")
    analyzer = analyzer_for(estimator, settings, interval_ms / 1000.0)
    with video_col:
        ctx = webrtc_streamer(
            key="agegender-live",
            mode=WebRtcMode.SENDRECV,
            rtc_configuration=rtc_configuration(),
            media_stream_constraints={"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}, "audio": False},
            video_frame_callback=analyzer.callback,
            async_processing=True,  # the worker keeps only the newest frame when the model falls behind
        )
    playing = bool(ctx.state.playing)
    if playing:
        st.session_state["_live_was_playing"] = True
        st.session_state.pop("_live_stopped", None)
    elif st.session_state.pop("_live_was_playing", False):
        # STOP: keep what the stream showed for the "stopped" note, and forget the tracks so that START begins
        # afresh (no boxes of the previous stream on the first frames of the next).
        st.session_state["_live_stopped"] = (st.session_state.pop("_live_last_stats", None)
                                             or live.LiveStats(fps=0.0, inference_fps=0.0, latency_ms=0.0,
                                                               faces=0, frames=0))
        analyzer.reset()

    @st.fragment(run_every=1.0 if playing else None)
    def stats_panel() -> None:
        stats = None
        if playing:
            stats = analyzer.latest_stats() or st.session_state.get("_live_last_stats")
            if stats is not None:
                st.session_state["_live_last_stats"] = stats
        live_view.stats_panel(stats, playing, st.session_state.get("_live_stopped"))

    stats_panel()
else:
    shot = st.camera_input("Snapshot", key="live_snapshot")
    if shot is None:
        st.info("Take a snapshot: each face gets the same card as on the Upload page.")
    else:
        result = analyse_cached(shot.getvalue(), "snapshot.jpg", estimator, settings)
        render_result(result, estimator, settings, key="snap")
