"""Page setup and the sidebar settings every page shares (model, detector, age groups, score, labels).

Settings live in persistent ``cfg_*`` session keys, so a choice made on one page holds on every other page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from agegender import PRESETS, AgeGenderError
from agegender.detection.detector import DETECTOR_MODES
from agegender.weights import bundled_backbones, model_entry

from .report_data import entry_metrics

UNTRAINED_FALLBACK = "efficientnet_lite0"
PAGES: tuple[tuple[str, str, str], ...] = (  # (script relative to the app folder, label, icon)
    ("streamlit_app.py", "Home", ":material/home:"),
    ("pages/1_Upload_photos.py", "Upload photos", ":material/photo_library:"),
    ("pages/2_Live_camera.py", "Live camera", ":material/videocam:"),
    ("pages/5_Video_file.py", "Video file", ":material/movie:"),
    ("pages/3_Age_check.py", "Age check", ":material/verified_user:"),
    ("pages/4_Model_report.py", "Model report", ":material/analytics:"),
)
# Shown once per page (in the page's own caption or info box), not in the sidebar as well.
PRIVACY = ("Privacy: images are processed in memory on the server running this app and never stored; "
           "they are gone when you close the tab.")
DETECTOR_HELP = {
    "auto": "auto (near and far faces)",
    "short": "short (selfie, webcam)",
    "full": "full (group photos)",
}


@dataclass(frozen=True)
class Settings:
    """The sidebar choices shared by all pages. ``model=None``: no trained model is bundled (dev fallback)."""

    model: str | None
    detector: str = "auto"
    preset: str = "fairface9"
    min_score: float = 0.5
    show_labels: bool = True

    @property
    def estimator_key(self) -> tuple[str | None, str, float]:
        """What the cached Estimator depends on. The age-group preset is deliberately not part of it: faces are
        regrouped with ``Estimator.with_groups`` without running the network again."""
        return self.model, self.detector, round(float(self.min_score), 3)


SETTING_NAMES = ("model", "detector", "preset", "min_score", "show_labels")


def available_models() -> list[str]:
    """Backbones with trained weights bundled in ``weights/``, the manifest's default first."""
    try:
        return bundled_backbones()  # from the manifest: no torch needed to list what can run
    except AgeGenderError:
        return []


def default_settings() -> Settings:
    models = available_models()
    return Settings(model=models[0] if models else None)


def _cfg_key(name: str) -> str:
    return f"cfg_{name}"


def _widget_key(name: str) -> str:
    return f"_w_{name}"


def current_settings() -> Settings:
    """Settings from ``st.session_state`` (persistent ``cfg_*`` keys), validated; defaults where unset."""
    base = default_settings()
    state = st.session_state
    models = available_models()
    values: dict[str, Any] = {}
    for name in SETTING_NAMES:
        values[name] = state.get(_cfg_key(name), getattr(base, name))
    if values["model"] not in models:
        values["model"] = base.model
    if values["detector"] not in DETECTOR_MODES:
        values["detector"] = base.detector
    if values["preset"] not in PRESETS:
        values["preset"] = base.preset
    try:
        values["min_score"] = float(min(max(float(values["min_score"]), 0.05), 0.99))
    except (TypeError, ValueError):
        values["min_score"] = base.min_score
    values["show_labels"] = bool(values["show_labels"])
    return Settings(**values)


def _persist(name: str) -> None:
    """on_change: copy a widget's value into its persistent key. Streamlit deletes the state of widgets that
    are not rendered in a run (page switches, reruns that stop early); ``cfg_*`` keys survive that."""
    st.session_state[_cfg_key(name)] = st.session_state[_widget_key(name)]


def page_setup(title: str) -> Settings:
    """What every page does first: page config, the sidebar (page links, shared settings); returns settings.

    The app uses the classic ``pages/`` folder; Streamlit's own page list is hidden
    (``client.showSidebarNavigation = false``) so the sidebar can show readable names and icons.
    """
    st.set_page_config(page_title=f"{title} · agegender", page_icon="🧑‍🤝‍🧑", layout="wide")
    with st.sidebar:
        for script, label, icon in PAGES:
            st.page_link(script, label=label, icon=icon)
    return settings_sidebar()


def settings_sidebar() -> Settings:
    """Draw the shared settings in the sidebar (every page calls this) and return them."""
    settings = current_settings()
    for name in SETTING_NAMES:
        st.session_state[_cfg_key(name)] = getattr(settings, name)
        st.session_state[_widget_key(name)] = getattr(settings, name)  # re-seed: see _persist
    models = available_models()
    with st.sidebar:
        st.subheader("Settings", divider="gray")
        if models:
            st.selectbox("Model", models, key=_widget_key("model"), format_func=model_label,
                         on_change=_persist, args=("model",),
                         help="Only models whose trained weights are bundled are offered.")
        else:
            st.caption(f"Model: **{UNTRAINED_FALLBACK} (untrained)**, no trained weights are bundled yet.")
        st.selectbox("Face detector", list(DETECTOR_MODES), key=_widget_key("detector"),
                     format_func=lambda m: DETECTOR_HELP.get(m, m), on_change=_persist, args=("detector",),
                     help="short: faces within ~2 m, fastest. full: small and far faces, tiled over big photos. "
                          "auto: both, merged.")
        st.selectbox("Age groups", list(PRESETS), key=_widget_key("preset"), format_func=preset_label,
                     on_change=_persist, args=("preset",),
                     help="fairface9: 0-2, 3-9, 10-19 … 70+. life4: child, adolescent, adult, senior. bins10: "
                          "finer bins around 18. adience8: the Adience benchmark's groups. Changing the groups "
                          "regroups the same predictions; nothing is recomputed.")
        st.slider("Minimum detection score", 0.1, 0.95, step=0.05, key=_widget_key("min_score"),
                  on_change=_persist, args=("min_score",),
                  help="Lower finds more (and more false) faces; 0.5 is MediaPipe's default.")
        st.toggle("Show labels on boxes", key=_widget_key("show_labels"), on_change=_persist, args=("show_labels",))
    return current_settings()


def model_label(backbone: str) -> str:
    found = model_entry(backbone)
    mae = entry_metrics(found[1] if found else None).get("mae")
    return f"{backbone} (MAE {mae:.1f} y)" if isinstance(mae, (int, float)) else backbone


def preset_label(name: str) -> str:
    return f"{name} ({len(PRESETS[name].labels)} groups)"
