"""``agegender batch`` on Ray Data (local Ray, 2 workers) against ``agegender predict`` on the same folder of real
photos: the same faces, boxes and ages; error rows for hostile files; the Parquet schema; the rerun rule."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("ray.data", reason="agegender batch needs the [scale] extra (Ray Data)")

from agegender.distributed.batch import expand_inputs, prepare_output, read_rows, schema  # noqa: E402
from conftest import data_path, utkface_chips  # noqa: E402
from hostile_corpus import png_claiming  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GROUP_PHOTOS = [("deepface", "couple.jpg"), ("insightface", "t1.jpg"), ("dlib_examples_faces", "2008_001322.jpg")]
HOSTILE = {"truncated.jpg", "empty.png", "notes-named.jpg", "bomb.png"}


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "agegender", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=900)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut) -> Path:
    """Group photos, UTKFace chips and the astronaut, beside four files no decoder should take."""
    folder = tmp_path_factory.mktemp("batch-in")
    for parts in GROUP_PHOTOS:
        path = data_path("group_photos", *parts)
        if path.is_file():
            shutil.copy(path, folder / parts[-1])
    for chip in utkface_chips(6):
        shutil.copy(chip, folder / chip.name)
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    (folder / "truncated.jpg").write_bytes((folder / "astronaut.png").read_bytes()[:3000])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes-named.jpg").write_text("not a picture\n" * 40)
    (folder / "bomb.png").write_bytes(png_claiming(60_000, 60_000))
    return folder


def key(row: dict) -> tuple:
    return (row["file"], int(row["face"]) if row["face"] not in (None, "") else 0)


def predict_rows(folder: Path) -> dict[tuple, dict]:
    proc = cli("predict", str(folder), "--csv")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # 1: the hostile files failed
    return {key(r): r for r in csv.DictReader(io.StringIO(proc.stdout))}


@pytest.fixture(scope="module")
def batch_out(photos, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("batch-out")
    proc = cli("batch", str(photos), str(out), "--workers", "2")
    return out, proc


def test_batch_equals_predict_face_for_face(photos, batch_out):
    out, proc = batch_out
    assert proc.returncode == 1, proc.stderr  # as predict: 1 when any file failed
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    files = sorted(p for p in photos.iterdir())
    assert summary["images"] == len(files) and summary["errors"] == len(HOSTILE)
    expected = predict_rows(photos)
    got = {key(r): r for r in read_rows(out)}
    assert summary["rows"] == len(got) == len(expected)
    assert set(got) == set(expected)
    faces = 0
    for k, want in expected.items():
        row = got[k]
        if want["error"]:
            assert row["face"] is None and row["error"] == want["error"], (row, want)
            continue
        faces += 1
        assert [row[c] for c in ("x1", "y1", "x2", "y2")] == [int(want[c]) for c in ("x1", "y1", "x2", "y2")]
        for column in ("age", "age_low", "age_high", "p_female", "p_adult", "score"):
            assert row[column] == pytest.approx(float(want[column]), abs=1e-4), (k, column)
        assert row["gender"] == want["gender"] and row["age_group"] == want["age_group"] and row["error"] is None
    assert faces >= 10  # group photos and chips really went through the network


def test_hostile_files_get_error_rows_and_the_batch_goes_on(batch_out):
    out, _ = batch_out
    rows = read_rows(out)
    errors = {Path(r["file"]).name: r["error"] for r in rows if r["face"] is None and r["error"] != "no face found"}
    assert set(errors) == HOSTILE
    assert "truncated" in errors["truncated.jpg"] and "empty" in errors["empty.png"]
    assert "megapixels" in errors["bomb.png"] or "too large" in errors["bomb.png"].lower()
    assert all("\n" not in e for e in errors.values())


def test_parquet_files_have_the_one_schema(batch_out):
    import pyarrow.parquet as pq

    out, _ = batch_out
    files = sorted(out.glob("*.parquet"))
    assert files
    for path in files:
        assert pq.read_schema(path).remove_metadata().equals(schema()), path
    assert [f.name for f in schema()][:2] == ["file", "face"]


def test_a_rerun_is_refused_then_overwrites_without_duplicates(photos, batch_out, tmp_path):
    out, _ = batch_out
    before = sorted(p.name for p in out.iterdir())
    again = cli("batch", str(photos), str(out))
    assert again.returncode == 2 and "not empty" in again.stderr and "--overwrite" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written, nothing removed
    listing = tmp_path / "list.txt"
    chips = sorted(p.name for p in photos.glob("*.chip.jpg"))
    listing.write_text("# two chips, a glob's worth of PNGs and a file that is gone\n" + "\n".join(
        str(photos / n) for n in chips[:2]) + "\n" + str(photos / "gone.jpg") + "\n")
    jsonl = tmp_path / "jsonl"
    first = cli("batch", str(listing), str(photos / "*.png"), str(jsonl), "--format", "jsonl", "--workers", "1")
    assert first.returncode == 1, first.stderr
    rerun = cli("batch", str(listing), str(photos / "*.png"), str(jsonl), "--format", "jsonl", "--overwrite")
    assert rerun.returncode == 1
    rows = read_rows(jsonl)
    names = {Path(r["file"]).name for r in rows}
    assert names == {*chips[:2], "gone.jpg", "astronaut.png", "empty.png", "bomb.png"}
    assert len(rows) == json.loads(first.stdout)["rows"] == json.loads(rerun.stdout)["rows"]  # replaced, not added
    assert next(r["error"] for r in rows if r["file"].endswith("gone.jpg")).endswith("no such file")
    assert all(p.suffix == ".json" for p in jsonl.iterdir())


def test_inputs_and_output_rules_without_ray(tmp_path, photos):
    files, errors = expand_inputs([str(photos), str(photos / "*.zzz"), str(tmp_path / "missing")])
    assert len(files) == len(list(photos.iterdir())) and all(Path(f).is_absolute() for f in files)
    assert [e["error"] for e in errors] == [f"{photos / '*.zzz'}: matches no file", f"{tmp_path / 'missing'}: no such file"]
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "part.parquet").write_bytes(b"x")
    with pytest.raises(ValueError, match="not empty"):
        prepare_output(tmp_path / "used")
    assert prepare_output(tmp_path / "used", overwrite=True).is_dir() and not any((tmp_path / "used").iterdir())
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        prepare_output(tmp_path / "a-file")
