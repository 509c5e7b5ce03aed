"""Bundled weights: the manifest, sha256 verification and pickle-free loading.

Every file in ``weights/`` is listed in ``weights/MANIFEST.json`` with its sha256; a file whose hash does not
match is refused, so a truncated download or a git-lfs pointer fails loudly here instead of producing garbage
ages. Model tensors are read with safetensors, never with pickle.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agegender.errors import WeightsError
from agegender.paths import WEIGHTS_DIR

MANIFEST_NAME = "MANIFEST.json"
MAX_FILE_BYTES = 50 * 1024 * 1024



def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(weights_dir: Path | str | None = None) -> dict[str, Any]:
    """The parsed ``MANIFEST.json``: ``{"default_model": ..., "files": {name: entry}}``.

    Anything else (a bare list, ``"files": []``, an entry that is not an object) is a :class:`WeightsError`
    naming the file, never an ``AttributeError`` deep inside a caller."""
    path = Path(weights_dir or WEIGHTS_DIR) / MANIFEST_NAME
    if not path.is_file():
        raise WeightsError(f"{path} not found: run agegender from a checkout that includes weights/, "
                           "or set AGEGENDER_WEIGHTS to that folder")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise WeightsError(f"{path} must hold a JSON object with a \"files\" object, not {type(manifest).__name__}")
    files = manifest.setdefault("files", {})
    if not isinstance(files, dict) or not all(isinstance(e, dict) for e in files.values()):
        raise WeightsError(f"{path}: \"files\" must map file names to objects")
    default = manifest.get("default_model")
    if default is not None and not isinstance(default, str):
        raise WeightsError(f"{path}: \"default_model\" must be a backbone name")
    return manifest


def write_manifest(manifest: dict[str, Any], weights_dir: Path | str | None = None) -> Path:
    path = Path(weights_dir or WEIGHTS_DIR) / MANIFEST_NAME
    manifest["files"] = dict(sorted(manifest.get("files", {}).items()))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)  # atomic: a reader (the app, a test) never sees a half-written manifest
    return path


def verified_bytes(name: str, weights_dir: Path | str | None = None) -> bytes:
    """The bytes of bundled file ``name``, checked against the manifest's sha256 and the size limit.

    The file is read once and the *same bytes* are hashed and returned for loading, so a file changed between
    the check and the load (or edited in place keeping its size and mtime) can never be used unverified."""
    wdir = Path(weights_dir or WEIGHTS_DIR)
    entry = read_manifest(wdir)["files"].get(name)
    if entry is None:
        raise WeightsError(f"{name} is not listed in {wdir / MANIFEST_NAME}")
    path = wdir / name
    if not path.is_file():
        raise WeightsError(f"{path} is missing (listed in the manifest)")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise WeightsError(f"{path} is {path.stat().st_size / 1e6:.1f} MB, over the 50 MB limit for bundled files")
    data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise WeightsError(f"{path} is {len(data) / 1e6:.1f} MB, over the 50 MB limit for bundled files")
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.get("sha256"):
        raise WeightsError(
            f"{path}: sha256 {actual[:12]}… does not match the manifest ({str(entry.get('sha256'))[:12]}…). "
            "The file is corrupt, truncated or a git-lfs pointer; restore it from the repository."
        )
    return data


def verified_path(name: str, weights_dir: Path | str | None = None) -> Path:
    """Path of bundled file ``name`` after checking it (for loaders that only take a path, e.g. MediaPipe's).

    Only for small files read right away; model weights go through :func:`verified_bytes`."""
    verified_bytes(name, weights_dir)
    return Path(weights_dir or WEIGHTS_DIR) / name


def model_entry(backbone: str, weights_dir: Path | str | None = None) -> tuple[str, dict[str, Any]] | None:
    """The manifest entry of the trained age/gender model for ``backbone``, or ``None`` if none is bundled."""
    for name, entry in read_manifest(weights_dir)["files"].items():
        if entry.get("kind") == "agegender" and entry.get("backbone") == backbone:
            return name, entry
    return None


def default_backbone(weights_dir: Path | str | None = None) -> str | None:
    """The backbone the manifest names as default (chosen by measured accuracy), if any."""
    return read_manifest(weights_dir).get("default_model")


def bundled_backbones(weights_dir: Path | str | None = None) -> list[str]:
    """Backbones with trained weights in the manifest, the default first (no torch needed)."""
    manifest = read_manifest(weights_dir)
    found = [e["backbone"] for e in manifest["files"].values() if e.get("kind") == "agegender" and e.get("backbone")]
    default = manifest.get("default_model")
    return sorted(set(found), key=lambda b: (b != default, b))


def onnx_entry(model_file: str, weights_dir: Path | str | None = None,
               precision: str = "float32") -> tuple[str, dict[str, Any]] | None:
    """The bundled ONNX graph exported from ``model_file`` (a safetensors name) at ``precision``, if any.

    A graph is only returned while it still belongs to the weights it was exported from (its ``source_sha256``
    equals the safetensors file's ``sha256``): re-exported weights never run with a stale graph."""
    files = read_manifest(weights_dir)["files"]
    source_sha = files.get(model_file, {}).get("sha256")
    for name, entry in files.items():
        if (entry.get("kind") == "agegender-onnx" and entry.get("source") == model_file
                and entry.get("precision", "float32") == precision and entry.get("source_sha256") == source_sha):
            return name, entry
    return None


def load_state_dict(name: str, weights_dir: Path | str | None = None) -> dict:
    """Tensors of a bundled safetensors file, verified first; returned as float32 (needs torch)."""
    from safetensors.torch import load

    data = verified_bytes(name, weights_dir)
    try:
        tensors = load(data)
    except Exception as exc:
        raise WeightsError(f"{name} is not a readable safetensors file: {exc}") from None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}


def register_file(name: str, entry: dict[str, Any], weights_dir: Path | str | None = None) -> dict[str, Any]:
    """Add or update ``name`` in the manifest with its current sha256 and size (used by export and setup)."""
    wdir = Path(weights_dir or WEIGHTS_DIR)
    path = wdir / name
    try:
        manifest = read_manifest(wdir)
    except WeightsError:
        manifest = {"files": {}}
    full = dict(entry)
    full["sha256"] = sha256_file(path)
    full["bytes"] = path.stat().st_size
    if full["bytes"] > MAX_FILE_BYTES:
        raise WeightsError(f"{path} is over the 50 MB limit for bundled files")
    manifest["files"][name] = full
    write_manifest(manifest, wdir)
    return full
