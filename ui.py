"""Shared helpers of the Streamlit pages: settings, the cached estimator, per-image analysis, cards, exports.

The pages hold no model logic: everything here calls the ``agegender`` library and only decides how results
are shown. Uploaded images live in memory (``st.session_state``) and are never written to disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import altair as alt
import cv2
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from agegender import PRESETS, AgeGenderError, Estimator, Face, annotate, load_image
from agegender.detection import DETECTOR_MODES
from agegender.models import list_backbones
from agegender.paths import REPO_DIR
from agegender.weights import default_backbone, model_entry, read_manifest

APP_DIR = Path(__file__).resolve().parent
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp"]
MAX_UPLOAD_MB = 25  # keep in step with server.maxUploadSize in .streamlit/config.toml
UNTRAINED_FALLBACK = "efficientnet_lite0"
DISPLAY_MAX_SIDE = 1600  # annotated pictures are downscaled to this for the browser (full size in the zip)
CACHE_MAX_BYTES = 600 * 1024 * 1024  # decoded images kept per session for cheap reruns
PAGES: tuple[tuple[str, str, str], ...] = (  # (script relative to the app folder, label, icon)
    ("streamlit_app.py", "Home", ":material/home:"),
    ("pages/1_Upload_photos.py", "Upload photos", ":material/photo_library:"),
    ("pages/2_Live_camera.py", "Live camera", ":material/videocam:"),
    ("pages/5_Video_file.py", "Video file", ":material/movie:"),
    ("pages/3_Age_check.py", "Age check", ":material/verified_user:"),
    ("pages/4_Model_report.py", "Model report", ":material/analytics:"),
)
PRIVACY = ("Privacy: images are processed in memory on the server running this app and never stored; "
           "they are gone when you close the tab.")
DETECTOR_HELP = {
    "auto": "auto (near and far faces)",
    "short": "short (selfie, webcam)",
    "full": "full (group photos)",
}


# ============================================================================================ settings
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
        found = [b for b in list_backbones() if model_entry(b) is not None]
        default = default_backbone()
    except AgeGenderError:
        return []
    return sorted(found, key=lambda b: (b != default, b))


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
        st.caption(PRIVACY)
    return current_settings()


def entry_metrics(entry: dict | None) -> dict[str, Any]:
    """Headline numbers of a manifest entry: ``{"mae", "gender_acc", "source"}`` from its test metrics if an
    evaluation added them, else its validation metrics (``metrics.val.combined`` as written by the export)."""
    metrics = (entry or {}).get("metrics") or {}
    if isinstance(metrics.get("mae"), (int, float)):
        return {"mae": metrics["mae"], "gender_acc": metrics.get("gender_accuracy", metrics.get("gender_acc")),
                "source": "manifest"}
    for split in ("test", "val"):
        block = metrics.get(split)
        if isinstance(block, dict):
            for key in ("combined", *block):
                part = block.get(key)
                if isinstance(part, dict) and isinstance(part.get("mae"), (int, float)):
                    return {"mae": part["mae"], "gender_acc": part.get("gender_acc", part.get("gender_accuracy")),
                            "source": f"{split} {key}"}
    return {}


def training_epochs(entry: dict | None) -> float | None:
    """Epochs of the whole training behind a manifest entry: a fine-tuned model (``--init-from``) adds the epochs
    of the runs it started from, which the manifest nests under ``training.initialised_from``."""
    stage = (entry or {}).get("training")
    total = None
    while isinstance(stage, dict) and isinstance(stage.get("epochs_completed"), (int, float)):
        total = (total or 0.0) + stage["epochs_completed"]
        stage = stage.get("initialised_from") or stage.get("parent")
    return total


def model_label(backbone: str) -> str:
    found = model_entry(backbone)
    mae = entry_metrics(found[1] if found else None).get("mae")
    return f"{backbone} (MAE {mae:.1f} y)" if isinstance(mae, (int, float)) else backbone


def preset_label(name: str) -> str:
    return f"{name} ({len(PRESETS[name].labels)} groups)"


# ============================================================================================ the estimator
@st.cache_resource(max_entries=4, show_spinner="Loading the face detector and the age/gender model…")
def _cached_estimator(model: str | None, detector: str, min_score: float) -> Estimator:
    """One Estimator per (model, detector, min_score), shared by all sessions (it is thread-safe)."""
    if model is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the page shows its own, more visible warning
            return Estimator(UNTRAINED_FALLBACK, detector=detector, min_score=min_score, weights=None)
    return Estimator(model, detector=detector, min_score=min_score)


UNTRAINED_WARNING = ("**The model is untrained.** No trained weights are bundled in `weights/` yet, so the app "
                     "runs a randomly initialised network: faces are found correctly, but every age and gender "
                     "shown is meaningless. Train and export a model (see the README) to fix this.")


def load_estimator(settings: Settings) -> Estimator:
    """The cached estimator for ``settings``; shows the untrained warning, stops the page on a weights error."""
    try:
        estimator = _cached_estimator(*settings.estimator_key)
    except AgeGenderError as exc:
        st.error(f"The model could not be loaded: {exc}")
        st.stop()
    if not estimator.trained:
        st.warning(UNTRAINED_WARNING, icon="⚠️")
    return estimator


# ============================================================================================ analysis
@dataclass
class ImageResult:
    """One analysed image (or why it could not be analysed). ``rgb`` stays in memory only."""

    name: str
    digest: str
    rgb: np.ndarray | None = field(default=None, repr=False)
    faces: list[Face] = field(default_factory=list)
    error: str | None = None

    @property
    def nbytes(self) -> int:
        crops = sum(f.crop.nbytes for f in self.faces if f.crop is not None)
        return (self.rgb.nbytes if self.rgb is not None else 0) + crops


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def analyse_bytes(data: bytes, name: str, estimator: Estimator, max_bytes: int = MAX_UPLOAD_MB * 1024 * 1024,
                  digest: str | None = None) -> ImageResult:
    """Decode and analyse one uploaded file; never raises for a bad file (the error is in the result)."""
    digest = digest or digest_of(data)
    if len(data) > max_bytes:
        return ImageResult(name, digest, error=f"the file is {len(data) / 1e6:.1f} MB, over the "
                                               f"{max_bytes / 1024 / 1024:.0f} MB limit")
    try:
        rgb = load_image(data)
        faces = estimator.predict(rgb)
    except AgeGenderError as exc:
        return ImageResult(name, digest, error=_clean_error(exc))
    return ImageResult(name, digest, rgb=rgb, faces=faces)


def _clean_error(exc: Exception) -> str:
    return str(exc).removeprefix("the uploaded data: ")


def analyse_cached(data: bytes, name: str, estimator: Estimator, settings: Settings) -> ImageResult:
    """``analyse_bytes`` memoised in this session by (content hash, estimator settings): reruns (a new preset,
    a click on a download button) cost nothing. Bounded by CACHE_MAX_BYTES, oldest first out."""
    cache: OrderedDict = st.session_state.setdefault("_analysis_cache", OrderedDict())
    digest = digest_of(data)
    key = (digest, settings.estimator_key)
    if key in cache:
        cache.move_to_end(key)
        hit: ImageResult = cache[key]
        return replace(hit, name=name)
    result = analyse_bytes(data, name, estimator, digest=digest)
    cache[key] = result
    total = sum(r.nbytes for r in cache.values())
    while total > CACHE_MAX_BYTES and len(cache) > 1:
        _, old = cache.popitem(last=False)
        total -= old.nbytes
    return result


def regroup(result: ImageResult, estimator: Estimator, preset: str) -> list[Face]:
    """The result's faces under ``preset`` (cheap: sums of the 101 bins, no network)."""
    return estimator.with_groups(result.faces, preset)


# ============================================================================================ rendering
def display_image(rgb: np.ndarray) -> np.ndarray:
    """Downscaled copy for the browser: a 24 MP photo need not travel over the websocket in full."""
    h, w = rgb.shape[:2]
    scale = DISPLAY_MAX_SIDE / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def card_text(face: Face) -> str:
    """The card's words; one markdown block so a test can check a card has an age and a gender."""
    label, p = face.top_group
    return (f"**Face {face.index}**  \n"
            f"Age **{face.age:.0f}** (80 % interval {face.age_low:.0f}–{face.age_high:.0f})  \n"
            f"Age group **{label}** ({p:.0%})  \n"
            f"Gender **{face.gender}** ({face.gender_confidence:.0%} confident)")


def group_chart(face: Face, height: int = 150) -> alt.Chart:
    """Bar chart of the face's group probabilities in the preset's order; the most likely group stands out."""
    top = face.top_group[0]
    df = pd.DataFrame({"group": list(face.groups), "probability": list(face.groups.values())})
    df["top"] = df["group"] == top
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("group:N", sort=list(face.groups), title=None, axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
            y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title=None),
            color=alt.condition(alt.datum.top, alt.value("#0072B2"), alt.value("#9BB8CF")),
            tooltip=["group", alt.Tooltip("probability:Q", format=".1%")],
        )
        .properties(height=height)
    )


def face_card(face: Face, key: str) -> None:
    """One face: the exact model input, expected age with its 80 % interval, top group, gender, group chart."""
    with st.container(border=True, key=key):
        left, right = st.columns([1, 3], vertical_alignment="center")
        if face.crop is not None:
            left.image(face.crop, width="stretch", caption=f"input #{face.index}")
        right.markdown(card_text(face))
        st.altair_chart(group_chart(face), width="stretch")


def render_result(result: ImageResult, estimator: Estimator, settings: Settings, key: str,
                  cards_per_row: int = 3) -> None:
    """An analysed image: error, or the annotated picture, a 'no face' note or one card per face."""
    if result.error:
        st.error(f"**{result.name}**: {result.error}")
        return
    faces = regroup(result, estimator, settings.preset)
    st.subheader(result.name, divider="gray")
    shown = display_image(annotate(result.rgb, faces, show_labels=settings.show_labels))
    h, w = result.rgb.shape[:2]
    n = len(faces)
    st.image(shown, caption=f"{w}×{h} px · {n} face{'s' if n != 1 else ''}", width=min(max(shown.shape[1], 720), 1000))
    if not faces:
        st.info(f"No face found in {result.name}. Try the 'full' detector or a lower minimum detection score.")
        return
    for start in range(0, n, cards_per_row):
        cols = st.columns(cards_per_row)
        for col, face in zip(cols, faces[start:start + cards_per_row], strict=False):
            with col:
                face_card(face, key=f"facecard-{key}-{face.index}")


# ============================================================================================ exports
def faces_table(results: Iterable[ImageResult]) -> pd.DataFrame:
    """One row per face of every analysed image (regrouped faces: call after ``render_result``)."""
    rows = []
    for r in results:
        for f in r.faces:
            label, p = f.top_group
            rows.append({
                "image": r.name, "face": f.index, "age": round(f.age, 1), "age_low": f.age_low,
                "age_high": f.age_high, "age_group": label, "group_prob": round(p, 3), "gender": f.gender,
                "p_female": round(f.p_female, 3), "gender_confidence": round(f.gender_confidence, 3),
                "p_adult": round(f.p_at_least(18), 3), "score": round(f.score, 3),
                "box": " ".join(str(int(v)) for v in f.box),
            })
    columns = ["image", "face", "age", "age_low", "age_high", "age_group", "group_prob", "gender", "p_female",
               "gender_confidence", "p_adult", "score", "box"]
    return pd.DataFrame(rows, columns=columns)


def results_json(results: Sequence[ImageResult], settings: Settings, estimator: Estimator) -> str:
    payload = {
        "model": estimator.info()["model"], "trained": bool(estimator.trained), "detector": settings.detector,
        "groups": settings.preset, "min_score": settings.min_score,
        "images": [{"name": r.name, "sha256": r.digest, "error": r.error,
                    "width": None if r.rgb is None else int(r.rgb.shape[1]),
                    "height": None if r.rgb is None else int(r.rgb.shape[0]),
                    "faces": [f.to_dict() for f in r.faces]} for r in results],
    }
    return json.dumps(payload, indent=2)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def annotated_zip(results: Sequence[ImageResult], show_labels: bool) -> bytes:
    """The annotated pictures as PNGs in one zip, built in memory (never on disk)."""
    buf = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:  # PNG is compressed already
        for r in results:
            if r.rgb is None:
                continue
            stem = Path(r.name).stem or "image"
            name, k = f"{stem}_annotated.png", 1
            while name in used:
                k += 1
                name = f"{stem}_{k}_annotated.png"
            used.add(name)
            zf.writestr(name, png_bytes(annotate(r.rgb, r.faces, show_labels=show_labels)))
    return buf.getvalue()


def download_buttons(results: Sequence[ImageResult], settings: Settings, estimator: Estimator) -> None:
    table = faces_table(results)
    c1, c2, c3 = st.columns(3)
    c1.download_button("⬇ CSV (all faces)", table.to_csv(index=False).encode(), "agegender_faces.csv",
                       "text/csv", on_click="ignore", width="stretch")
    c2.download_button("⬇ JSON (all faces)", results_json(results, settings, estimator).encode(),
                       "agegender_faces.json", "application/json", on_click="ignore", width="stretch")
    images = [r for r in results if r.rgb is not None]
    c3.download_button("⬇ Annotated PNGs (zip)", lambda: annotated_zip(images, settings.show_labels),
                       "agegender_annotated.zip", "application/zip", on_click="ignore",
                       disabled=not images, width="stretch")


# ============================================================================================ age check
@dataclass(frozen=True)
class AgeDecision:
    """The age-check outcome for one face under the buffer policy (see :func:`age_check`)."""

    passed: bool
    threshold: int
    buffer: int
    p_at_least: float
    reason: str


def age_check(face: Face, threshold: int, buffer: int) -> AgeDecision:
    """Pass only if BOTH hold, otherwise ask for ID:

    1. the expected age is at least ``threshold + buffer`` (the "Challenge 25" idea: with t = 18 and a 7-year
       buffer, anyone who looks under 25 is asked), and
    2. the lower end of the 80 % interval is at least ``threshold``: the model itself gives at most a 10 %
       chance that the person is younger than the threshold.
    """
    need = threshold + buffer
    p = face.p_at_least(threshold)
    point_ok = face.age >= need
    low_ok = face.age_low >= threshold
    if point_ok and low_ok:
        reason = f"estimated {face.age:.0f} ≥ {need} and the interval starts at {face.age_low:.0f} ≥ {threshold}"
    elif not point_ok:
        reason = f"estimated {face.age:.0f} is under {threshold} + {buffer} = {need}"
    else:
        reason = f"the interval starts at {face.age_low:.0f}, under {threshold}: too uncertain"
    return AgeDecision(point_ok and low_ok, int(threshold), int(buffer), p, reason)


# ============================================================================================ reports
def reports_dir() -> Path:
    """Where ``agegender evaluate`` writes ``<name>/report.json`` (``AGEGENDER_REPORTS`` overrides)."""
    return Path(os.environ.get("AGEGENDER_REPORTS", REPO_DIR / "reports"))


def load_reports(root: Path | None = None) -> dict[str, dict]:
    """Every ``reports/*/report.json`` by folder name; unreadable files are skipped (and named in ``_errors``)."""
    root = root or reports_dir()
    out: dict[str, dict] = {}
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*/report.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            data.setdefault("_path", str(path))
            out[path.parent.name] = data
    return out


def manifest_models() -> dict[str, dict]:
    """Manifest entries of the bundled age/gender models, by backbone."""
    try:
        files = read_manifest().get("files", {})
    except AgeGenderError:
        return {}
    return {e.get("backbone", name): {"file": name, **e} for name, e in files.items() if e.get("kind") == "agegender"}


def report_metrics(report: dict | None) -> dict:
    """The metrics of a report written by ``agegender evaluate`` (``report["metrics"]``), or a flat report."""
    if not report:
        return {}
    metrics = report.get("metrics")
    return metrics if isinstance(metrics, dict) else report


def report_model(name: str, report: dict) -> str:
    """Which model a report describes: the estimator recorded in its run, else its title, else the folder."""
    m = report_metrics(report)
    estimator = (m.get("run") or {}).get("estimator") or {}
    for value in (estimator.get("model"), (report.get("extra") or {}).get("model"), report.get("model")):
        if isinstance(value, str) and value:
            return value
    title = report.get("title")
    if isinstance(title, str) and " on " in title:
        return title.split(" on ", 1)[0].strip()
    return name


def manifest_report_refs(entry: dict) -> list[str]:
    """Report folders a manifest entry points to: ``report`` at its top, in ``metrics``, or in each of the
    ``metrics.test.<set:mode>`` blocks that ``agegender evaluate`` adds (in the manifest's order)."""
    refs: list[str] = []
    metrics = entry.get("metrics") or {}
    for holder in (entry, metrics, *(v for v in (metrics.get("test") or {}).values() if isinstance(v, dict))):
        if isinstance(holder.get("report"), str):
            refs.append(holder["report"])
    return refs


MODE_PREFERENCE = ("photos", "pasted", "crops")  # closest to what the app does first


def report_for_model(model: str | None, reports: dict[str, dict] | None = None) -> tuple[str, dict] | None:
    """The evaluation report that best describes ``model`` in the app: the one the manifest points to, else
    its report on whole photos, else on pasted chips, else on chips; larger evaluations first."""
    if model is None:
        return None
    reports = load_reports() if reports is None else reports
    for ref in manifest_report_refs(manifest_models().get(model, {})):
        folder = Path(ref).name if Path(ref).name != "report.json" else Path(ref).parent.name
        if folder in reports:
            return folder, reports[folder]
    mine = [(name, rep) for name, rep in reports.items()
            if not name.startswith("peer") and report_model(name, rep) == model]
    if not mine:
        return None

    def rank(item: tuple[str, dict]) -> tuple[int, int]:
        m = report_metrics(item[1])
        mode = (item[1].get("extra") or {}).get("mode") or (m.get("run") or {}).get("mode")
        order = MODE_PREFERENCE.index(mode) if mode in MODE_PREFERENCE else len(MODE_PREFERENCE)
        return order, -int(m.get("n") or 0)

    return min(mine, key=rank)


def report_slices(report: dict | None, kind: str) -> list[dict]:
    """Rows of the ``decade``/``gender``/``race`` slices of a report (``metrics.slices[kind]``, or a flat
    ``by_<kind>`` section), each with the slice name under ``kind``."""
    m = report_metrics(report)
    section = (m.get("slices") or {}).get(kind)
    if section is None:
        section = m.get(f"by_{kind}")
    return by_group_rows(section, kind)


def by_group_rows(section: Any, group_name: str) -> list[dict]:
    """Normalise a slice section (a {group: {...}} dict or a list of records) to records."""
    rows: list[dict] = []
    if isinstance(section, dict):
        for key, value in section.items():
            if isinstance(value, dict):
                rows.append({group_name: str(key), **value})
            elif isinstance(value, (int, float)):
                rows.append({group_name: str(key), "mae": value})
    elif isinstance(section, list):
        for item in section:
            if isinstance(item, dict):
                item = dict(item)
                label = item.pop(group_name, None) or item.pop("group", None) or item.pop("name", None) \
                    or item.pop("label", None)
                rows.append({group_name: str(label), **item})
    return rows


def over_18(report: dict | None) -> dict:
    """``{"accuracy", "false_adult_rate", "false_minor_rate"}`` from either report layout."""
    m = report_metrics(report)
    section = m.get("over_18")
    if isinstance(section, dict):
        return section
    return {"accuracy": m.get("over18_accuracy"), "false_adult_rate": m.get("false_adult_rate"),
            "false_minor_rate": m.get("false_minor_rate")}


def error_at_age(report: dict | None, age: float) -> tuple[float, str] | None:
    """(MAE, decade label) of the report's age decade containing ``age``, if measured."""
    for row in report_slices(report, "decade"):
        label = row["decade"]
        lo, hi = _decade_bounds(label)
        mae = row.get("mae")
        if lo is not None and lo <= age <= hi and isinstance(mae, (int, float)) and math.isfinite(mae):
            return float(mae), label
    return None

def _decade_bounds(label: str) -> tuple[float | None, float]:
    text = str(label).replace("–", "-").replace("s", "").strip()
    try:
        if text.endswith("+"):
            return float(text[:-1]), 1e9
        if "-" in text:
            lo, hi = text.split("-", 1)
            return float(lo), float(hi) + 0.999
        lo = float(text)
        return lo, lo + 9.999
    except ValueError:
        return None, 0.0


HISTORY_KEYS = ("history", "training_history", "history_csv", "metrics_csv", "training_log", "log_csv", "curves")


def training_history(*sources: dict | None, base_dirs: Sequence[Path] = ()) -> pd.DataFrame | None:
    """Training curves from the first source (a manifest entry, a report, its ``extra``/``training``) that has
    them: a list of per-epoch records, or the path of a CSV with one row per epoch. ``None`` if none does."""
    candidates: list[dict] = []
    for src in sources:
        checkpoint = ((src or {}).get("training") or {}).get("checkpoint") if isinstance(src, dict) else None
        if isinstance(checkpoint, str) and "/" in checkpoint:  # a local run folder: runs/<name>/metrics.csv
            local = REPO_DIR / "runs" / checkpoint.split("/", 1)[0] / "metrics.csv"
            if local.is_file():
                try:
                    return pd.read_csv(local)
                except (OSError, ValueError, pd.errors.ParserError):
                    pass
        if isinstance(src, dict):
            candidates += [src] + [src[k] for k in ("extra", "training", "train") if isinstance(src.get(k), dict)]
    for src in candidates:
        for key in HISTORY_KEYS:
            value = src.get(key)
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                return pd.DataFrame(value)
            if isinstance(value, str) and value.endswith(".csv"):
                for base in (*base_dirs, REPO_DIR):
                    path = (Path(base) / value) if not Path(value).is_absolute() else Path(value)
                    if path.is_file():
                        try:
                            return pd.read_csv(path)
                        except (OSError, ValueError, pd.errors.ParserError):
                            return None
    return None
