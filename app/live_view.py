"""How the live page shows its statistics: a live/stopped badge, four metrics and the track table.

Why a separate "stopped" state: after STOP the last frame rate, latency and tracks are history, not a measurement;
showing them as if live made a stopped stream look like a frozen one. Stopped, the metrics read "–" and a note
says what the last stream showed. The table sits below the video at the page's full width with short column
names, so its last column is not cut off on a laptop screen.
"""

from __future__ import annotations

import streamlit as st

from app.live import LiveStats

TRACK_COLUMNS = {
    "track": st.column_config.NumberColumn("track", format="#%d", width="small"),
    "age": st.column_config.NumberColumn("age", format="%.1f", width="small"),
    "80 % interval": st.column_config.TextColumn("80 % interval", width="small"),
    "gender": st.column_config.TextColumn("gender", width="small"),
    "confidence": st.column_config.TextColumn("confidence", width="small"),
    "frames": st.column_config.NumberColumn("frames", help="analysed frames that saw this face", width="small"),
}


def stats_panel(stats: LiveStats | None, playing: bool, stopped: LiveStats | None) -> None:
    """Render the statistics; ``stats`` only counts while ``playing``, ``stopped`` is the last stream's summary."""
    if playing:
        st.markdown(":green-badge[:material/radio_button_checked: Live]")
    else:
        st.markdown(":gray-badge[:material/stop_circle: Stopped]" if stopped is not None
                    else ":gray-badge[:material/videocam_off: Not started]")
        stats = None
    cols = st.columns(4)
    cols[0].metric("Video FPS", f"{stats.fps:.1f}" if stats else "–")
    cols[1].metric("Analysed FPS", f"{stats.inference_fps:.1f}" if stats else "–")
    cols[2].metric("Latency per analysed frame", f"{stats.latency_ms:.0f} ms" if stats else "–")
    cols[3].metric("Faces", f"{stats.faces}" if stats else "–")
    if stats and stats.error:
        st.error(f"The last frame could not be analysed: {stats.error}")
    if stats and stats.rows:
        st.dataframe(list(stats.rows), hide_index=True, width="stretch", column_config=TRACK_COLUMNS)
    elif playing:
        st.caption("Waiting for the first frame…" if stats is None else "No face in the current frame.")
    elif stopped is not None:
        st.info(f"Stopped. The last stream showed {stopped.frames} frames and {stopped.faces} "
                f"face{'s' if stopped.faces != 1 else ''} at the end; press START to go live again.",
                icon=":material/stop_circle:")
    else:
        st.caption("Press START to see the measured frame rate and the faces being tracked.")
