"""Batch inference on Ray Data: a folder, a glob or a list of images in, Parquet or JSON Lines files of face rows out.

The pipeline is Ray Data's own: ``read_binary_files`` reads the files (local paths or any URI its filesystems
take), ``map_batches`` runs :class:`FacePredictor` on an actor pool (each actor loads one
:class:`~agegender.Estimator` once and owns one core: one MediaPipe task, one single-threaded ONNX Runtime pass at a
time), and ``write_parquet``/``write_json`` write one file per block. Ray schedules the blocks over the actors of one
machine or of a cluster (``ray.init(address=...)``); nothing here queues or schedules work by hand.

Rows are :func:`agegender.results.face_rows`, the schema of ``agegender predict --csv``: one row per face, and one
row per image without faces or that could not be read (``error`` says why). A bad file never stops the batch, and
an input that cannot even be listed (a missing path in a list file) still gets its error row. Output folders must
be empty (or ``overwrite=True`` empties them first): Ray names every file it writes anew, so writing into a used
folder would duplicate rows.
"""

from __future__ import annotations

import glob
import logging
import random
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from agegender.results import CSV_COLUMNS, NO_FACE, face_rows, image_record

FORMATS = ("parquet", "jsonl")
WORKER_ENV = {"AGEGENDER_CORES": "1", "AGEGENDER_THREADS": "1", "OMP_NUM_THREADS": "1"}
"""Each actor owns one core: one concurrent pass (engines.threads), one intra-op thread, no OpenMP pool."""


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def schema():
    """The Arrow schema of the rows (:data:`~agegender.results.CSV_COLUMNS`, typed), the same in every file."""
    import pyarrow as pa

    types = {"face": pa.int32(), "x1": pa.int32(), "y1": pa.int32(), "x2": pa.int32(), "y2": pa.int32(),
             "file": pa.string(), "age_group": pa.string(), "gender": pa.string(), "error": pa.string()}
    return pa.schema([(column, types.get(column, pa.float64())) for column in CSV_COLUMNS])


def to_table(rows: list[dict[str, Any]]):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema())


@dataclass(frozen=True)
class BatchSummary:
    images: int
    rows: int
    errors: int
    output: str
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class FacePredictor:
    """The ``map_batches`` callable: built once per actor (the Estimator loads its models once), then called
    with batches of ``{"bytes", "path"}`` rows; returns the face rows of the whole batch as columns."""

    def __init__(self, estimator_options: dict[str, Any], crops: bool = False):
        # Set here rather than in a runtime_env: an actor with a runtime_env of its own needs a new worker process
        # (~2 s) instead of one Ray started ahead. Read when the Estimator is built (engines.threads reads them per
        # call), so they hold even if this worker imported agegender before.
        os.environ.update(WORKER_ENV)
        from agegender.estimator import Estimator

        self.crops = crops
        self.estimator = Estimator(**estimator_options)

    def __call__(self, batch: dict[str, np.ndarray]):
        rows: list[dict[str, Any]] = []
        for data, path in zip(batch["bytes"], batch["path"]):
            rows += face_rows(self.record(bytes(data), str(path)))
        return to_table(rows)

    def record(self, data: bytes, path: str) -> dict[str, Any]:
        from agegender.errors import AgeGenderError
        from agegender.io.images import load_image

        name = Path(path).name
        try:
            rgb = load_image(data, name=name)
            faces = self.estimator.predict_crops([rgb]) if self.crops else self.estimator.predict(rgb)
        except AgeGenderError as exc:  # worded as agegender predict words it (cli.predict._named)
            message = str(exc)
            return image_record(path, error=message if path in message or name in message else f"{path}: {message}")
        return image_record(path, faces, width=rgb.shape[1], height=rgb.shape[0])


def expand_inputs(inputs: Sequence[str], recursive: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    """The files to read and the error rows of inputs that cannot be read at all.

    An input is a folder (its images, as ``agegender predict`` lists them), a glob (``photos/*.jpg``), a list file
    (``.txt``/``.lst``: one path or URI per line, ``#`` comments), a file, or a URI (``s3://…``, passed to Ray)."""
    files: list[str] = []
    errors: list[dict[str, Any]] = []

    def add(raw: str, base: Path | None = None) -> None:
        if "://" in raw:
            files.append(raw)
            return
        path = Path(raw) if base is None or Path(raw).is_absolute() else base / raw
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            files.extend(str(p.resolve()) for p in found)
            if not found:
                errors.append(_error_row(str(path), f"{path}: no image files in this folder"))
        elif path.is_file() and os.access(path, os.R_OK):
            files.append(str(path.resolve()))
        elif path.exists():
            errors.append(_error_row(str(path), f"{path}: cannot be read (permissions)"))
        else:
            errors.append(_error_row(str(path), f"{path}: no such file"))

    for raw in inputs:
        path = Path(raw)
        if path.is_file() and path.suffix.lower() in (".txt", ".lst"):
            for line in path.read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    add(line.strip(), path.parent)
        elif any(ch in raw for ch in "*?[") and not path.exists():
            matches = sorted(glob.glob(raw, recursive=True))
            for match in matches:
                add(match)
            if not matches:
                errors.append(_error_row(raw, f"{raw}: matches no file"))
        else:
            add(raw)
    return list(dict.fromkeys(files)), errors


def _error_row(file: str, error: str) -> dict[str, Any]:
    return face_rows(image_record(file, error=error))[0]


def prepare_output(output: str | Path, overwrite: bool = False) -> Path:
    """The output folder, created, and empty: refused when it holds files unless ``overwrite`` (then emptied)."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder for the output")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"{out} is not empty: a second run would add its rows beside the first run's "
                             "(use --overwrite to replace them, or another folder)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_batch(inputs: Sequence[str] | str, output: str | Path, *, workers: int = 1,
              estimator_options: dict[str, Any] | None = None, crops: bool = False, fmt: str = "parquet",
              overwrite: bool = False, recursive: bool = False, batch_size: int = 16, address: str | None = None,
              progress: bool = False) -> BatchSummary:
    """Predict every image of ``inputs`` on ``workers`` Ray actors and write face rows to ``output``.

    ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``); default ``RAY_ADDRESS`` if set, else a
    local Ray on this machine. ``estimator_options``: ``Estimator`` keyword arguments (plain values)."""
    import time

    import ray

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    if workers < 1 or batch_size < 1:
        raise ValueError("workers and batch size must be at least 1")
    started = time.perf_counter()
    files, errors = expand_inputs([inputs] if isinstance(inputs, str) else list(inputs), recursive)
    # A seeded shuffle spreads the slow images (big group photos, often side by side in a folder) over the blocks,
    # so no actor gets all of them; rows carry their file, so the output order does not matter.
    random.Random(0).shuffle(files)
    out = prepare_output(output, overwrite)
    _init_ray(address, workers)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = progress
    if not progress:  # Ray Data's INFO lines (execution plans, "finished in") are progress too
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    parts = []
    if files:
        parts.append(ray.data.read_binary_files(files, include_paths=True, override_num_blocks=_blocks(len(files), workers))
                     .map_batches(FacePredictor, fn_constructor_kwargs={"estimator_options": estimator_options or {},
                                                                        "crops": crops},
                                  batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                                  num_cpus=1))
    if errors:
        parts.append(ray.data.from_arrow(to_table(errors)))
    dataset = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0] if parts else None
    if dataset is None:
        raise ValueError("no input given")
    dataset = dataset.materialize()
    if fmt == "parquet":
        dataset.write_parquet(str(out))
    else:
        dataset.write_json(str(out))  # JSON Lines, one row a line
    rows = failed = 0
    for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        rows += table.num_rows
        failed += sum(1 for e in table.column("error").to_pylist() if e and e != NO_FACE)
    return BatchSummary(images=len(files) + len(errors), rows=rows, errors=failed, output=str(out),
                        seconds=time.perf_counter() - started)


IMAGES_PER_BLOCK = 128
"""Read blocks of at most about this many images, and at least 4 blocks per actor: every actor gets work from the
start and the last blocks even out (a block of big group photos takes several times one of chips), a block of
group photos stays a few hundred MB, and a failure or a straggler costs one block, not the run."""


def _blocks(files: int, workers: int) -> int:
    return max(1, min(files, max(4 * workers, -(-files // IMAGES_PER_BLOCK))))


def _init_ray(address: str | None, workers: int) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                               "include_dashboard": False, "configure_logging": True}
    if address is None:
        options["num_cpus"] = max(workers, 1) + 1  # the actors' cores, and one for reading and writing
    ray.init(address=address, **options)


def read_rows(output: str | Path) -> list[dict[str, Any]]:
    """Every row an output folder holds (Parquet or JSON Lines), for tests and small outputs."""
    import pyarrow.parquet as pq
    import json

    out = Path(output)
    rows: list[dict[str, Any]] = []
    for path in sorted(out.iterdir()):
        if path.suffix == ".parquet":
            rows += pq.read_table(path).to_pylist()
        elif path.suffix in (".json", ".jsonl"):
            rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


__all__: Iterable[str] = ["BatchSummary", "FORMATS", "FacePredictor", "expand_inputs", "prepare_output", "read_rows",
                          "run_batch"]
