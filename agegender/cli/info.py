"""``agegender info``: versions, engines, presets and the bundled weights with their hashes."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agegender import __version__
from agegender.errors import AgeGenderError
from agegender.groups import PRESETS


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    i = subparsers.add_parser("info", help="versions, bundled weights and their hashes")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    return i


def _version_of(distribution: str) -> str | None:
    """An installed package's version from its metadata, without importing it (torch alone takes seconds)."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    from agegender.engines import onnxruntime_available, torch_available
    from agegender.engines.precision import int8_instructions
    from agegender.paths import WEIGHTS_DIR
    from agegender.weights import bundled_backbones, read_manifest

    versions = {name: _version_of(dist) for name, dist in (
        ("onnxruntime", "onnxruntime"), ("torch", "torch"), ("mediapipe", "mediapipe"),
        ("opencv", "opencv-contrib-python") if _version_of("opencv-contrib-python") else ("opencv", "opencv-python-headless"),
        ("numpy", "numpy"))}
    info: dict[str, Any] = {
        "agegender": __version__, "python": platform.python_version(), **versions,
        "engines": [e for e, ok in (("onnx", onnxruntime_available()), ("torch", torch_available())) if ok],
        "presets": list(PRESETS), "weights_dir": str(WEIGHTS_DIR),
        "cpu_int8_instructions": int8_instructions(),  # what precision="auto" needs to consider int8
    }
    try:
        manifest = read_manifest()
        info["default_model"] = manifest.get("default_model")
        info["models"] = bundled_backbones()
        info["weights"] = {name: {k: e.get(k) for k in ("kind", "backbone", "detector", "precision", "bytes", "sha256")
                                  if e.get(k) is not None} for name, e in manifest["files"].items()}
    except AgeGenderError as exc:
        info["weights_error"] = str(exc)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if key == "weights":
                print("weights:")
                for name, entry in value.items():
                    print(f"  {name}: {entry.get('kind')} {entry.get('backbone') or entry.get('detector')} "
                          f"{entry.get('bytes')} bytes sha256 {entry.get('sha256')}")
            else:
                print(f"{key}: {value}")
    return 0
