"""The ``agegender`` command line, end to end in subprocesses (``--untrained``: random weights, tests only).

Output schema: :mod:`agegender.results` (``--json`` = JSON Lines, one record per image; ``--json-array`` = one
list), the same as the app's downloads."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.cli.predict import CSV_FIELDS
from agegender.groups import PRESETS
from agegender.paths import WEIGHTS_DIR

from conftest import encode

FACE_KEYS = {"index", "box", "score", "keypoints", "age", "age_low", "age_high", "age_group", "groups", "gender",
             "p_female", "gender_confidence", "p_adult"}
UNTRAINED = ["--untrained", "--model", "efficientnet_lite0"]

RECORDS_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["file", "sha256", "width", "height", "faces", "error", "summary"],
        "properties": {
            "file": {"type": "string"},
            "width": {"type": ["integer", "null"], "minimum": 1},
            "height": {"type": ["integer", "null"], "minimum": 1},
            "error": {"type": ["string", "null"]},
            "annotated": {"type": "string"},
            "sha256": {"type": ["string", "null"]},
            "summary": {"type": "object", "required": ["faces", "female", "male", "mean_age", "age_histogram",
                                                       "age_groups"]},
            "faces": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": sorted(FACE_KEYS),
                    "additionalProperties": False,
                    "properties": {
                        "index": {"type": "integer", "minimum": 1},
                        "box": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
                        "score": {"type": "number", "minimum": 0, "maximum": 1},
                        "keypoints": {"type": "array", "minItems": 6, "maxItems": 6,
                                      "items": {"type": "array", "items": {"type": "number"}, "minItems": 2,
                                                "maxItems": 2}},
                        "age": {"type": "number", "minimum": 0, "maximum": 100},
                        "age_low": {"type": "number", "minimum": 0, "maximum": 100},
                        "age_high": {"type": "number", "minimum": 0, "maximum": 100},
                        "age_group": {"type": "string"},
                        "groups": {"type": "object", "additionalProperties": {"type": "number"}},
                        "gender": {"enum": ["female", "male"]},
                        "p_female": {"type": "number", "minimum": 0, "maximum": 1},
                        "gender_confidence": {"type": "number", "minimum": 0.5, "maximum": 1},
                        "p_adult": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                },
            },
        },
    },
}


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", "agegender", *args], capture_output=True, text=True, timeout=180,
                          env=env, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def jsonl(proc: subprocess.CompletedProcess) -> list[dict]:
    """The records of a ``--json`` run: one JSON object per line."""
    return [json.loads(line) for line in proc.stdout.splitlines()]


def validate_records(records) -> None:
    try:
        import jsonschema
    except ImportError:  # the structural checks below still run
        pass
    else:
        jsonschema.validate(records, RECORDS_SCHEMA)
    assert isinstance(records, list)
    for rec in records:
        assert {"file", "width", "height", "faces", "error"} <= set(rec)
        assert isinstance(rec["faces"], list)
        if rec["error"] is None:
            assert isinstance(rec["width"], int) and isinstance(rec["height"], int)
        for face in rec["faces"]:
            assert set(face) == FACE_KEYS
            assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
            assert face["age_low"] <= face["age"] <= face["age_high"]
            assert abs(sum(face["groups"].values()) - 1.0) < 1e-3
            assert face["age_group"] in face["groups"]
            assert (face["gender"] == "female") == (face["p_female"] >= 0.5)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut):
    folder = tmp_path_factory.mktemp("cli_inputs")
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    (folder / "notes.jpg").write_text("not an image at all\n")
    jpeg = encode(astronaut, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "readme.txt").write_text("ignored: not an image suffix\n")
    return folder


@pytest.fixture(scope="module")
def json_run(inputs):
    return run_cli("predict", str(inputs), "--json", *UNTRAINED)


def test_predict_json_folder_with_bad_files(json_run, inputs):
    assert json_run.returncode == 1, "a failed file must make the exit code 1"
    records = jsonl(json_run)
    validate_records(records)
    by_name = {Path(r["file"]).name: r for r in records}
    assert set(by_name) == {"astronaut.png", "notes.jpg", "truncated.jpg"}, "only image suffixes, sorted"
    assert [Path(r["file"]).name for r in records] == sorted(by_name)
    good = by_name["astronaut.png"]
    assert good["error"] is None and (good["width"], good["height"]) == (512, 512)
    assert len(good["faces"]) == 1
    x1, y1, x2, y2 = good["faces"][0]["box"]
    assert 150 <= x1 <= 200 and 250 <= x2 <= 300
    assert list(good["faces"][0]["groups"]) == list(PRESETS["fairface9"].labels)
    for name in ("notes.jpg", "truncated.jpg"):
        bad = by_name[name]
        assert bad["error"] and bad["faces"] == [] and bad["width"] is None
        assert name in bad["error"], "the error names the file"
        assert json_run.stderr.count(name) == 1, "failures are reported on stderr too, once"
    assert "not an image" in by_name["notes.jpg"]["error"]
    assert "truncated" in by_name["truncated.jpg"]["error"] or "corrupt" in by_name["truncated.jpg"]["error"]


def test_predict_csv(inputs):
    proc = run_cli("predict", str(inputs / "astronaut.png"), str(inputs / "notes.jpg"), "--csv", *UNTRAINED)
    assert proc.returncode == 1
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert proc.stdout.splitlines()[0].split(",") == CSV_FIELDS
    faces = [r for r in rows if r["file"].endswith("astronaut.png")]
    assert len(faces) == 1, "one row per face"
    row = faces[0]
    assert row["face"] == "1" and row["error"] == ""
    assert 150 <= int(row["x1"]) <= 200 and 250 <= int(row["x2"]) <= 300
    assert 0 <= float(row["age"]) <= 100 and row["gender"] in ("female", "male")
    assert row["age_group"] in PRESETS["fairface9"].labels
    errors = [r for r in rows if r["file"].endswith("notes.jpg")]
    assert len(errors) == 1 and "not an image" in errors[0]["error"] and errors[0]["face"] == ""


def test_predict_annotate_and_groups(inputs, tmp_path):
    out_dir = tmp_path / "annotated"
    proc = run_cli("predict", str(inputs / "astronaut.png"), "--json", "--groups", "life4", "--annotate",
                   str(out_dir), *UNTRAINED)
    assert proc.returncode == 0, proc.stderr
    records = jsonl(proc)
    validate_records(records)
    face = records[0]["faces"][0]
    assert list(face["groups"]) == list(PRESETS["life4"].labels)
    assert face["age_group"] in PRESETS["life4"].labels
    written = sorted(out_dir.glob("*.png"))
    assert [p.name for p in written] == ["astronaut.annotated.png"]
    assert records[0]["annotated"] == str(written[0])
    annotated = np.asarray(Image.open(written[0]).convert("RGB"))
    original = np.asarray(Image.open(inputs / "astronaut.png").convert("RGB"))
    assert annotated.shape == original.shape
    changed = np.any(annotated != original, axis=2)
    assert changed.any(), "boxes must be drawn"
    ys, xs = np.nonzero(changed)
    x1, y1, x2, y2 = face["box"]
    # Drawing stays around the face box (box outline and label), the rest of the picture is untouched.
    assert xs.min() >= x1 - 5 and xs.max() <= x2 + 5 + 120 and ys.max() <= y2 + 5
    assert not changed[300:, :].any() and not changed[:, 350:].any()


def test_predict_custom_edges_and_text_output(inputs):
    proc = run_cli("predict", str(inputs / "astronaut.png"), "--groups", "0,13,18,65", *UNTRAINED)
    assert proc.returncode == 0, proc.stderr
    assert "astronaut.png: 1 face(s)" in proc.stdout
    assert any(g in proc.stdout for g in ("0-12", "13-17", "18-64", "65+"))


def test_bad_arguments_are_reported_without_traceback(inputs, tmp_path):
    proc = run_cli("predict", str(inputs / "astronaut.png"), "--groups", "teenagers", *UNTRAINED)
    assert proc.returncode == 2 and "fairface9" in proc.stderr
    proc = run_cli("predict", str(tmp_path / "empty_dir_does_not_exist"), "--json", *UNTRAINED)
    assert proc.returncode == 1
    records = jsonl(proc)
    assert records[0]["error"] and "no such file" in records[0]["error"]


def test_info_json_lists_detector_weights_with_hashes():
    proc = run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert {"resnet50", "efficientnet_lite0"} <= set(info["models"]) and "onnx" in info["engines"]
    assert set(PRESETS) <= set(info["presets"])
    weights = info["weights"]
    for name in ("face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite"):
        assert name in weights
        data = (WEIGHTS_DIR / name).read_bytes()
        assert weights[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert weights[name]["bytes"] == len(data)
        assert weights[name]["kind"] == "detector"


@pytest.mark.parametrize("argv, flip, scale, suffix", [
    ([], True, True, ""),                        # the default, as in the app
    (["--no-scale-tta"], True, False, "-flip-tta"),
    (["--no-tta"], False, False, "-no-tta"),     # no TTA at all, scales included
    (["--no-tta", "--scale-tta"], False, False, "-no-tta"),
])
def test_tta_switches_map_to_the_estimator_and_report_names(argv, flip, scale, suffix):
    import argparse

    from agegender.cli.options import add_tta_arguments, tta_options, tta_variant

    parser = argparse.ArgumentParser()
    add_tta_arguments(parser)
    options = tta_options(parser.parse_args(argv))
    assert options == {"flip_tta": flip, "scale_tta": scale}
    assert tta_variant(options) == suffix
    assert tta_variant({"flip_tta": False, "scale_tta": True}) == "-scale-tta"
    assert tta_variant({"flip_tta": True, "scale_tta": True, "outer_views": "alternate"}) == "-alt-views"
    assert tta_variant({"flip_tta": True, "scale_tta": False, "outer_views": "alternate"}) == "-flip-tta"


def test_predict_crops_no_scale_tta_changes_the_answer_on_a_chip(inputs, tmp_path, astronaut):
    chip = tmp_path / "chip.png"
    Image.fromarray(np.ascontiguousarray(astronaut[30:230, 130:330])).save(chip)
    runs = [jsonl(run_cli("predict", str(chip), "--crops", "--json", *extra))[0]["faces"]
            for extra in ([], ["--no-scale-tta"], ["--no-scale-tta"])]
    assert all(len(faces) == 1 and faces[0]["score"] > 0.5 for faces in runs)
    assert runs[1] == runs[2], "the same settings give the same answer"
    assert runs[0][0]["age"] != runs[1][0]["age"], "three framings of the face are not the calibrated one alone"
    assert runs[0][0]["box"] == runs[1][0]["box"]  # the same detected face


def test_json_array_keeps_one_list_and_age_probs_are_optional(inputs):
    proc = run_cli("predict", str(inputs / "astronaut.png"), str(inputs / "notes.jpg"), "--json-array",
                   "--age-probs", *UNTRAINED)
    assert proc.returncode == 1
    records = json.loads(proc.stdout)
    assert [Path(r["file"]).name for r in records] == ["astronaut.png", "notes.jpg"]
    probs = records[0]["faces"][0]["age_probs"]
    assert len(probs) == 101 and abs(sum(probs) - 1) < 1e-3
    assert records[0]["summary"]["faces"] == 1 and records[1]["summary"]["faces"] == 0


def test_text_output_prints_errors_once_and_says_where_pictures_went(inputs, tmp_path):
    out_dir = tmp_path / "drawn"
    proc = run_cli("predict", str(inputs / "astronaut.png"), str(inputs / "notes.jpg"), "--annotate",
                   str(out_dir), *UNTRAINED)
    assert proc.returncode == 1
    assert "ERROR" not in proc.stdout and "notes.jpg" not in proc.stdout  # stdout: results only
    assert proc.stderr.count("notes.jpg") == 1  # the error, once
    assert f"annotated: {out_dir / 'astronaut.annotated.png'}" in proc.stdout
    assert f"1 annotated PNG written to {out_dir}" in proc.stderr
    assert "DestroyAccelerator" not in proc.stderr  # MediaPipe's close-down chatter is hidden


def test_annotate_names_are_unique_and_long_names_still_get_a_file(astronaut, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    names = ["photo.jpg", "photo.webp", "sub/photo.jpg", "PHOTO.png", "x" * 245 + ".png"]
    for name in names:
        Image.fromarray(astronaut).save(src / name)
    out_dir = tmp_path / "out"
    proc = run_cli("predict", *(str(src / n) for n in names), "--json", "--annotate", str(out_dir), *UNTRAINED)
    assert proc.returncode == 0, proc.stderr
    records = jsonl(proc)
    written = [Path(r["annotated"]) for r in records]
    assert len(set(written)) == len(names) and all(p.is_file() for p in written)
    assert [p.name for p in written[:4]] == ["photo.annotated.png", "photo-2.annotated.png",
                                             "photo-3.annotated.png", "PHOTO-4.annotated.png"]
    assert len(written[4].name.encode()) <= 200
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in written)


def test_annotate_write_failure_is_recorded(astronaut, tmp_path, monkeypatch):
    from PIL import Image as PILImage

    from agegender.cli.predict import iter_records

    class NoFaces:
        def predict(self, rgb):
            return []

    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)

    def failing_save(self, fp, *args, **kwargs):
        raise OSError(36, "File name too long")

    monkeypatch.setattr(PILImage.Image, "save", failing_save)
    (record,) = iter_records(NoFaces(), [path], annotate_dir=tmp_path / "out")
    assert "annotated" not in record
    assert record["error"].startswith(f"{path}: could not write the annotated picture")
    assert "File name too long" in record["error"]


def test_annotate_pointing_at_a_file_and_empty_folders(inputs, tmp_path):
    target = tmp_path / "taken.png"
    target.write_bytes(b"x")
    proc = run_cli("predict", str(inputs / "astronaut.png"), "--annotate", str(target), *UNTRAINED)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr and proc.stdout == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("predict", str(empty), str(inputs / "astronaut.png"), "--json", *UNTRAINED)
    assert proc.returncode == 1
    first, second = jsonl(proc)
    assert first["file"] == str(empty) and "no image files in this directory" in first["error"]
    assert second["error"] is None and len(second["faces"]) == 1


def test_size_limit_error_names_the_file(tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 7000)).save(huge)  # 56 megapixels in a few kB
    proc = run_cli("predict", str(huge), "--json", *UNTRAINED)
    assert proc.returncode == 1
    (record,) = jsonl(proc)
    assert "megapixels" in record["error"] and huge.name in record["error"] and record["file"] == str(huge)


def test_records_are_printed_as_they_finish(astronaut, tmp_path, capsys, monkeypatch):
    """A failure after the first image (here: the run is interrupted) loses nothing already analysed."""
    from agegender.cli import parser as cli_main, predict

    class Interrupted:
        calls = 0

        def predict(self, rgb):
            Interrupted.calls += 1
            if Interrupted.calls == 2:
                raise KeyboardInterrupt
            return []

        def close(self):
            pass

    for name in ("a.png", "b.png"):
        Image.fromarray(astronaut).save(tmp_path / name)
    args = cli_main.build_parser().parse_args(["predict", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--json"])
    monkeypatch.setattr(predict, "build_estimator", lambda a: Interrupted())
    with pytest.raises(KeyboardInterrupt):
        predict.cmd_predict(args)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["file"] == str(tmp_path / "a.png")
