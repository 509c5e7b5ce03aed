"""Bundled weights: the manifest matches the files, sizes stay under the limit, loading is pickle-free."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil

import pytest
import torch

from agegender import Estimator, WeightsError
from agegender.paths import WEIGHTS_DIR
from agegender.weights import (
    MANIFEST_NAME, MAX_FILE_BYTES, load_state_dict, read_manifest, register_file, sha256_file, verified_path,
)


def _bundled_files():
    return sorted(p for p in WEIGHTS_DIR.iterdir()
                  if p.is_file() and p.name != MANIFEST_NAME and not p.name.upper().startswith("LICENSE"))


def test_manifest_lists_every_file_with_matching_hash_and_size():
    manifest = json.loads((WEIGHTS_DIR / MANIFEST_NAME).read_text())
    files = manifest["files"]
    on_disk = {p.name for p in _bundled_files()}
    assert on_disk, "weights/ holds no bundled files"
    assert set(files) == on_disk, f"unlisted: {on_disk - set(files)}; listed but missing: {set(files) - on_disk}"
    for path in _bundled_files():
        entry = files[path.name]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), path.name
        assert entry["bytes"] == path.stat().st_size, path.name
        assert entry.get("kind") in ("detector", "agegender", "agegender-onnx"), path.name
        if entry["kind"] == "agegender":
            assert path.suffix == ".safetensors" and entry.get("backbone"), path.name
        if entry["kind"] == "agegender-onnx":  # a graph names the weights it was exported from, as they are now
            assert path.suffix == ".onnx" and entry["opset"] >= 17, path.name
            assert files[entry["source"]]["sha256"] == entry["source_sha256"], path.name
            assert files[entry["source"]]["backbone"] == entry["backbone"], path.name
    default = manifest.get("default_model")
    if default is not None:
        assert any(e.get("kind") == "agegender" and e.get("backbone") == default for e in files.values())


def test_detectors_are_bundled():
    kinds = {e.get("detector") for e in read_manifest()["files"].values() if e.get("kind") == "detector"}
    assert kinds == {"short", "full"}
    for name in ("face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite"):
        assert verified_path(name) == WEIGHTS_DIR / name


def test_every_file_is_at_most_50_mb():
    assert MAX_FILE_BYTES == 50 * 1024 * 1024
    for path in WEIGHTS_DIR.iterdir():
        if path.is_file():
            assert path.stat().st_size <= MAX_FILE_BYTES, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"


def test_licence_file_present():
    assert any(p.name.upper().startswith("LICENSE") for p in WEIGHTS_DIR.iterdir())


# ------------------------------------------------------------------------------------------ refusing bad files
@pytest.fixture()
def weights_copy(tmp_path):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    for f in WEIGHTS_DIR.iterdir():
        if f.is_file():
            shutil.copyfile(f, wdir / f.name)
    return wdir


def _pickle_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"age_head.weight": torch.zeros(101, 8)}, buf)  # a zip/pickle checkpoint
    return buf.getvalue()


@pytest.mark.parametrize("payload", ["torch_save", "plain_pickle"])
def test_pickle_renamed_safetensors_is_refused(weights_copy, payload):
    data = _pickle_bytes() if payload == "torch_save" else pickle.dumps({"x": [1, 2, 3]})
    name = "agegender_efficientnet_lite0.safetensors"
    (weights_copy / name).write_bytes(data)
    # Registered with its true hash, so only the format check can stop it.
    register_file(name, {"kind": "agegender", "backbone": "efficientnet_lite0"}, weights_copy)
    with pytest.raises(WeightsError, match="safetensors"):
        load_state_dict(name, weights_copy)
    with pytest.raises(WeightsError, match="safetensors"):
        Estimator(model="efficientnet_lite0", weights="bundled", weights_dir=weights_copy)


def test_pickle_passed_as_a_path_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(_pickle_bytes())
    with pytest.raises(WeightsError, match="safetensors"):
        Estimator(model="efficientnet_lite0", weights=path)


def test_unlisted_and_tampered_files_are_refused(weights_copy):
    with pytest.raises(WeightsError, match="not listed"):
        verified_path("extra.tflite", weights_copy)
    name = "face_detection_short_range.tflite"
    with open(weights_copy / name, "ab") as fh:
        fh.write(b"\0")  # appended byte: size and hash change
    with pytest.raises(WeightsError, match="sha256"):
        verified_path(name, weights_copy)


def test_oversized_file_is_refused_before_hashing(weights_copy):
    name = "huge.safetensors"
    with open(weights_copy / name, "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk space used
    manifest = read_manifest(weights_copy)
    manifest["files"][name] = {"kind": "agegender", "backbone": "resnet50", "sha256": "0" * 64,
                               "bytes": MAX_FILE_BYTES + 1}
    (weights_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="50 MB"):
        verified_path(name, weights_copy)
    with pytest.raises(WeightsError, match="50 MB"):
        register_file(name, {"kind": "agegender"}, weights_copy)


def test_missing_or_broken_manifest(tmp_path, weights_copy):
    with pytest.raises(WeightsError, match="MANIFEST.json"):
        read_manifest(tmp_path / "nowhere")
    (weights_copy / MANIFEST_NAME).write_text("{ not json")
    with pytest.raises(WeightsError, match="JSON"):
        read_manifest(weights_copy)


def test_register_file_records_hash_and_size(weights_copy):
    name = "face_detection_full_range_sparse.tflite"
    entry = register_file(name, {"kind": "detector", "detector": "full"}, weights_copy)
    assert entry["sha256"] == sha256_file(weights_copy / name)
    assert entry["bytes"] == (weights_copy / name).stat().st_size
    assert read_manifest(weights_copy)["files"][name]["sha256"] == entry["sha256"]


@pytest.mark.parametrize("content", ["[]", '{"files": []}', '{"files": {"a.onnx": 3}}', '{"files": {}, "default_model": 7}'])
def test_malformed_manifest_is_a_weights_error(weights_copy, content):
    (weights_copy / MANIFEST_NAME).write_text(content)
    with pytest.raises(WeightsError, match="MANIFEST.json"):
        read_manifest(weights_copy)
    with pytest.raises(WeightsError):
        Estimator(weights_dir=weights_copy)


def test_unknown_default_model_is_a_weights_error(weights_copy):
    manifest = read_manifest(weights_copy)
    manifest["default_model"] = "vit_huge"
    (weights_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="vit_huge"):
        Estimator(weights_dir=weights_copy)


def test_in_place_edit_keeping_size_and_mtime_is_caught_on_the_next_load(weights_copy):
    """The bytes that are hashed are the bytes that are loaded: no cache keyed on size and mtime."""
    import os

    name = "agegender_efficientnet_lite0.safetensors"
    load_state_dict(name, weights_copy)  # verified once
    path = weights_copy / name
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(WeightsError, match="sha256"):
        load_state_dict(name, weights_copy)
    with pytest.raises(WeightsError, match="sha256"):
        Estimator(weights_dir=weights_copy, engine="torch")
