"""Labelled images to evaluate: dataset samples, a user's folder of UTKFace-named files, or a labels CSV, and
the seeded subset of ``--limit``."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from agegender.evaluation.datasets import parse_utkface_name
from agegender.evaluation.metrics import RACE_NAMES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class Labelled(Protocol):
    """What :func:`evaluate` needs of a sample: :class:`agegender.evaluation.datasets.Sample` and :class:`LabelledImage`."""

    file: str
    age: int
    gender: int
    race: int

    def path(self) -> Path: ...


@dataclass(frozen=True)
class LabelledImage:
    """A labelled image anywhere on disk (a user's folder), as opposed to a dataset :class:`Sample`."""

    file: str
    age: int
    gender: int  # 0 male, 1 female
    location: Path
    race: int = -1

    def path(self) -> Path:
        return self.location


def subset(samples: Sequence[Labelled], limit: int | None, seed: int) -> list[Labelled]:
    """``limit`` samples drawn with a fixed seed: split lists are sorted by name, i.e. by age for UTKFace."""
    items = list(samples)
    if limit is None or limit >= len(items):
        return items
    picked = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in picked]



def _parse_gender(value: str) -> int:
    table = {"0": 0, "1": 1, "m": 0, "male": 0, "man": 0, "f": 1, "female": 1, "woman": 1}
    key = value.strip().lower()
    if key not in table:
        raise ValueError(f"gender {value!r} is not 0/1 or male/female")
    return table[key]


def _parse_race(value: str | None) -> int:
    if value is None or not value.strip():
        return -1
    by_name = {name.lower(): key for key, name in RACE_NAMES.items()}
    key = value.strip().lower()
    if key in by_name:
        return by_name[key]
    race = int(key)
    if race not in RACE_NAMES:
        raise ValueError(f"race {value!r} is not one of 0-4, -1 or {', '.join(RACE_NAMES.values())}")
    return race


def read_labels_csv(csv_path: Path, folders: Sequence[Path]) -> tuple[list[LabelledImage], int]:
    """Rows ``file, age, gender[, race]`` of a CSV, each file looked up in ``folders`` (first hit wins) or next
    to the CSV when no folder is given; plus how many listed files were not found. Raises ValueError naming
    the first bad row."""
    folders = list(folders) or [csv_path.parent]
    out: list[LabelledImage] = []
    missing_files = 0
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "age", "gender"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                age, gender, race = int(row["age"]), _parse_gender(row["gender"]), _parse_race(row.get("race"))
                if not 0 <= age <= 120:
                    raise ValueError(f"age {age} is outside 0-120")
            except ValueError as exc:
                raise ValueError(f"{csv_path}:{line}: {exc}") from None
            found = next((f / row["file"] for f in folders if (f / row["file"]).is_file()), None)
            if found is None:
                missing_files += 1
            else:
                out.append(LabelledImage(row["file"], age, gender, found, race))
    return out, missing_files


def labelled_folder_images(paths: Sequence[Path]) -> tuple[list[LabelledImage], int]:
    """Images in ``paths`` (folders, not recursive, or files) labelled by UTKFace-style names, plus how many
    images were skipped because their name carries no label."""
    files: list[Path] = []
    for p in paths:
        files += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
    out = []
    for f in files:
        s = parse_utkface_name(f.name)
        if s is not None:
            out.append(LabelledImage(f.name, s.age, s.gender, f, s.race))
    return out, len(files) - len(out)

