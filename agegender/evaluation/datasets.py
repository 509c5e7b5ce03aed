"""Reading the labelled datasets (UTKFace, All-Age-Faces) from ``AGEGENDER_DATA``; never copies them.

Labels use one convention everywhere in this project: ``gender`` 0 = male, 1 = female (UTKFace's coding;
All-Age-Faces' text labels are mapped to it), ``race`` 0-4 as in UTKFace or -1 when unknown.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from agegender.paths import REPO_DIR, data_root

SETS = ("utkface", "all_age_faces")
SPLITS_DIR = REPO_DIR / "train" / "splits"  # committed lists of file names


@dataclass(frozen=True)
class Sample:
    dataset: str
    file: str  # name relative to the dataset's image folder
    age: int
    gender: int  # 0 male, 1 female
    race: int = -1

    def path(self, root: Path | None = None) -> Path:
        return image_dir(self.dataset, root) / self.file


def image_dir(dataset: str, root: Path | None = None) -> Path:
    return (root or data_root()) / dataset / "images"


def parse_utkface_name(name: str) -> Sample | None:
    """``age_gender_race_datetime.jpg.chip.jpg`` → Sample; None for names that do not follow the pattern."""
    parts = name.split("_")
    try:
        age, gender = int(parts[0]), int(parts[1])
        race = int(parts[2]) if len(parts) >= 4 else -1
    except (ValueError, IndexError):
        return None
    if gender not in (0, 1) or not 0 <= age <= 120:
        return None
    return Sample("utkface", name, age, gender, race)


def list_samples(dataset: str, root: Path | None = None) -> list[Sample]:
    """Every labelled image of ``dataset``, sorted by file name."""
    if dataset == "utkface":
        folder = image_dir(dataset, root)
        samples = [parse_utkface_name(p.name) for p in sorted(folder.glob("*.jpg"))]
        return [s for s in samples if s is not None]
    if dataset == "all_age_faces":
        rows = []
        with open((root or data_root()) / dataset / "labels.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                gender = {"male": 0, "female": 1}.get(row["gender"].strip().lower())
                if gender is not None:
                    rows.append(Sample(dataset, row["file"], int(row["age"]), gender))
        return sorted(rows, key=lambda s: s.file)
    raise ValueError(f"unknown dataset {dataset!r}; known: {SETS}")


def content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_split(dataset: str, split: str, splits_dir: Path | None = None, root: Path | None = None) -> list[Sample]:
    """Samples of a committed split file (names only), with labels re-derived from the dataset."""
    splits_dir = splits_dir or SPLITS_DIR
    names = [n for n in (splits_dir / f"{dataset}_{split}.txt").read_text().splitlines() if n]
    by_name = {s.file: s for s in list_samples(dataset, root)}
    return [by_name[n] for n in names if n in by_name]
