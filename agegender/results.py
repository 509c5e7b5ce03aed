"""The one result schema shared by the CLI (``agegender predict``) and the app's downloads.

Why one module: a user who exports from the app and one who scripts the CLI should get the same columns and the
same records, so a spreadsheet or a script written against one works with the other. Everything here works on
JSON-safe dicts (the output of :meth:`Face.to_dict`), never on images, so it has no model logic.

* **Record** (one per input image; a JSON object, one line of the CLI's ``--json`` JSON Lines):
  ``file``, ``sha256`` (of the input bytes, or ``None``), ``width``, ``height`` (``None`` when not decoded),
  ``faces`` (``Face.to_dict()``; with ``age_probs``, the 101-bin distribution, when asked for), ``error``
  (``None`` or one line saying why the file was not analysed), ``summary`` (see :func:`crowd_summary`) and,
  when an annotated picture was written, ``annotated``.
* **CSV** (:data:`CSV_COLUMNS`): one row per face; an image without faces or with an error gets one row with
  empty face columns and its reason in ``error``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import PurePath
from typing import Any, Iterable, Mapping, Sequence

from agegender.face import Face

CSV_COLUMNS = ["file", "face", "x1", "y1", "x2", "y2", "score", "age", "age_low", "age_high", "age_group",
               "group_prob", "gender", "p_female", "gender_confidence", "p_adult", "error"]
NO_FACE = "no face found"
AGE_BINS = tuple((lo, lo + 9) for lo in range(0, 90, 10)) + ((90, 100),)  # decades of the expected age
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MAX_NAME_BYTES = 200  # annotated file names are cut to this (most file systems allow 255 bytes)


def age_bin_label(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 100 else f"{lo}-{hi}"


def crowd_summary(faces: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts that describe a group of faces (one photo or a whole batch): how many, how many of each gender,
    how many per decade of expected age and per most likely age group (in the preset's order).

    Counts, not probability sums, so they agree with the per-face ``gender`` and ``age_group`` columns a reader
    can count in the CSV."""
    genders = {"female": 0, "male": 0}
    histogram = {age_bin_label(lo, hi): 0 for lo, hi in AGE_BINS}
    groups: dict[str, int] = {}
    for face in faces:
        for label in face.get("groups") or {}:
            groups.setdefault(label, 0)
    ages = []
    for face in faces:
        genders[face["gender"]] = genders.get(face["gender"], 0) + 1
        age = float(face["age"])
        ages.append(age)
        decade = min(int(age // 10), len(AGE_BINS) - 1)
        histogram[age_bin_label(*AGE_BINS[decade])] += 1
        groups[face["age_group"]] = groups.get(face["age_group"], 0) + 1
    return {
        "faces": len(faces), "female": genders["female"], "male": genders["male"],
        "mean_age": round(sum(ages) / len(ages), 1) if ages else None,
        "age_histogram": histogram, "age_groups": groups,
    }


def image_record(file: str, faces: Sequence[Face] = (), *, width: int | None = None, height: int | None = None,
                 error: str | None = None, sha256: str | None = None, include_age_probs: bool = False,
                 ) -> dict[str, Any]:
    """The record of one input image (see the module docstring); ``faces`` are :class:`Face` objects."""
    face_dicts = [f.to_dict(include_age_probs=include_age_probs) for f in faces]
    return {"file": str(file), "sha256": sha256, "width": None if width is None else int(width),
            "height": None if height is None else int(height), "faces": face_dicts, "error": error,
            "summary": crowd_summary(face_dicts)}


def batch_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`crowd_summary` over every face of every record, with the number of images and of failed files."""
    records = list(records)
    faces = [f for r in records for f in r.get("faces") or []]
    out = crowd_summary(faces)
    out["images"] = len(records)
    out["failed"] = sum(1 for r in records if r.get("error"))
    return out


def csv_safe(value: Any) -> Any:
    """A cell that a spreadsheet will not run as a formula (``=HYPERLINK(...)`` in a file name): text that starts
    with ``= + - @`` or a tab/CR gets a leading apostrophe (the OWASP advice). Numbers pass unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def face_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per face of a record, or one row for an image without faces or with an error, with every
    column of :data:`CSV_COLUMNS` (``None`` where a column does not apply): the table behind ``predict --csv``,
    the app's CSV and ``agegender batch``'s Parquet/JSON Lines files."""
    if record.get("error") or not record.get("faces"):
        return [{**dict.fromkeys(CSV_COLUMNS), "file": record["file"], "error": record.get("error") or NO_FACE}]
    rows = []
    for f in record["faces"]:
        x1, y1, x2, y2 = f["box"]
        rows.append({
            "file": record["file"], "face": f["index"], "x1": x1, "y1": y1, "x2": x2, "y2": y2, "score": f["score"],
            "age": f["age"], "age_low": f["age_low"], "age_high": f["age_high"],
            "age_group": f["age_group"], "group_prob": round(float(f["groups"][f["age_group"]]), 4),
            "gender": f["gender"], "p_female": f["p_female"], "gender_confidence": f["gender_confidence"],
            "p_adult": f["p_adult"], "error": None,
        })
    return rows


def csv_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The CSV rows of one record (:func:`face_rows`, strings sanitised with :func:`csv_safe`, empty cells blank)."""
    return [{k: "" if v is None else csv_safe(v) for k, v in row.items() if v is not None or k == "error"}
            for row in face_rows(record)]


def csv_writer(out) -> csv.DictWriter:
    """A writer with :data:`CSV_COLUMNS`, header written (rows follow with ``writer.writerows(csv_rows(r))``)."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    return writer


def csv_text(records: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv_writer(buf)
    for rec in records:
        writer.writerows(csv_rows(rec))
    return buf.getvalue()


def json_line(record: Mapping[str, Any]) -> str:
    """One record as one line of JSON Lines (no newline inside; non-ASCII names as \\u escapes, so any
    terminal encoding can print it)."""
    return json.dumps(record, separators=(",", ":"))


def annotated_name(file: str | PurePath, used: set[str]) -> str:
    """A file name for the annotated picture of ``file`` that no other input of this run uses: ``photo.jpg``,
    ``photo.webp`` and ``sub/photo.jpg`` become ``photo.annotated.png``, ``photo-2.annotated.png``,
    ``photo-3.annotated.png``, in the CLI's folder and in the app's zip alike (compared case-insensitively, as
    on macOS and Windows). Long stems are cut so the name stays within :data:`MAX_NAME_BYTES`."""
    stem = PurePath(str(file).replace("\\", "/")).stem or "image"
    while len(stem.encode()) > MAX_NAME_BYTES - 24:
        stem = stem[:-1]
    name, k = f"{stem}.annotated.png", 1
    while name.lower() in used:
        k += 1
        name = f"{stem}-{k}.annotated.png"
    used.add(name.lower())
    return name
