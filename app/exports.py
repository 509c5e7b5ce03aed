"""The upload page's downloads: CSV, JSON and a zip of annotated PNGs, all built in memory (never on disk).

CSV columns and JSON records are those of :mod:`agegender.results`, the schema ``agegender predict`` writes,
so a file exported here and one written by the CLI can be read by the same code. Failed files are included
with their error; the JSON has each face's 101-bin age distribution (``age_probs``).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any, Sequence

import pandas as pd
import streamlit as st
from PIL import Image

from agegender import Estimator
from agegender.results import annotated_name, batch_summary, csv_rows, csv_text, image_record

from .analysis import DISPLAY_MAX_SIDE, ImageResult, regroup
from .cards import annotated_picture
from .settings import Settings


def result_records(results: Sequence[ImageResult], estimator: Estimator, settings: Settings,
                   include_age_probs: bool = True) -> list[dict[str, Any]]:
    """One :func:`agegender.results.image_record` per result, faces under the chosen age groups."""
    return [image_record(r.name, regroup(r, estimator, settings.preset) if r.error is None else [],
                         width=r.width, height=r.height, error=r.error, sha256=r.digest,
                         include_age_probs=include_age_probs) for r in results]


def faces_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The CSV rows of the faces (images without faces or with an error left out), for the on-page table."""
    rows = [row for rec in records if rec["faces"] for row in csv_rows(rec)]
    frame = pd.DataFrame(rows)
    return frame.drop(columns=["error"]) if "error" in frame else frame


def results_json(records: Sequence[dict[str, Any]], settings: Settings, estimator: Estimator) -> str:
    payload = {
        "model": estimator.info()["model"], "trained": bool(estimator.trained), "detector": settings.detector,
        "groups": settings.preset, "min_score": settings.min_score, "summary": batch_summary(records),
        "images": list(records),
    }
    return json.dumps(payload, indent=2, ensure_ascii=False)


def png_bytes(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def annotated_zip(results: Sequence[ImageResult], estimator: Estimator | None, settings: Settings) -> bytes:
    """The annotated pictures (downscaled as on the page) as PNGs in one zip, named as the CLI names them."""
    buf = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:  # PNG is compressed already
        for r in results:
            if r.display is None:
                continue
            faces = regroup(r, estimator, settings.preset) if estimator is not None else r.faces
            zf.writestr(annotated_name(r.name, used), png_bytes(annotated_picture(r, faces, settings.show_labels)))
    return buf.getvalue()


def download_buttons(results: Sequence[ImageResult], settings: Settings, estimator: Estimator) -> None:
    records = result_records(results, estimator, settings)
    c1, c2, c3 = st.columns(3)
    # Built only when clicked (callables): a rerun does not serialise every face again.
    c1.download_button("⬇ CSV (all faces)", lambda: csv_text(records).encode(), "agegender_faces.csv",
                       "text/csv", on_click="ignore", width="stretch",
                       help="One row per face; the same columns as `agegender predict --csv`.")
    c2.download_button("⬇ JSON (all images)", lambda: results_json(records, settings, estimator).encode(),
                       "agegender_results.json", "application/json", on_click="ignore", width="stretch",
                       help="One record per image (failed files with their error), as `agegender predict --json`, "
                            "plus each face's age distribution and the crowd summary.")
    images = [r for r in results if r.display is not None]
    c3.download_button("⬇ Annotated PNGs (zip)", lambda: annotated_zip(images, estimator, settings),
                       "agegender_annotated.zip", "application/zip", on_click="ignore",
                       disabled=not images, width="stretch",
                       help=f"At most {DISPLAY_MAX_SIDE} px on the long side, as shown on the page.")
