"""ImageNet initialisation of ResNet-50 for training (``python -m train --init msra|torchvision``).

``msra``: the original ResNet-50 of He et al. as MSRA released it (Caffe, MIT license), stored per tensor in
``$AGEGENDER_DATA/../models/resnet50_imagenet_msra`` (see its README). 312 files: the stem and layer1-layer3
complete, of layer4 only ``res5a_branch2a`` (``layer4.0.conv1``) and the BatchNorm/Scale tensors, the classifier
bias and the mean image. Its layout is v1 (stride in the first 1x1 convolution) and its input BGR 0-255 minus the
per-channel mean, so the network is built with ``layout="v1"`` and the ``caffe_msra`` normalisation.

How every file is used (:class:`InitReport` accounts for each one):

* *loaded* — convolution weights, BatchNorm running mean/variance (``bn*``) and weight/bias (``scale*``);
* *folded* — ``conv1.1``, the stem convolution's bias: torchvision's conv1 has none, and a constant before a
  BatchNorm only shifts its mean, so it becomes ``bn1.running_mean - bias`` (exact in eval mode; in train mode
  batch statistics absorb it anyway);
* *checked* — the mean image (its per-channel means must match the ``caffe_msra`` preset) and Caffe's
  moving-average factors (1.0 everywhere, so mean and variance are used as stored);
* *skipped* — ``fc1000.1`` (there is no classifier) and the BatchNorm/Scale tensors of layer4 convolutions whose
  weights are missing: statistics of a convolution we do not have describe nothing in a freshly drawn one.

What is not loaded is initialised freshly (He-normal convolutions, BatchNorm 1/0) and the last BatchNorm of every
*fresh* residual block is zeroed, so layer4 starts as layer4.0's shortcut followed by two identity blocks: the
pretrained layer3 features reach the heads almost unchanged at the first step. Pretrained blocks keep their
trained last BatchNorm (zeroing it would cut off their learned residuals).

``torchvision``: torchvision's own ImageNet ResNet-50 (v1.5 layout, ImageNet mean/std) from a local ``.pth`` state
dict or, when there is internet, downloaded once through ``torch.hub`` into its cache. Every backbone tensor loads;
only the classifier is dropped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agegender.models import AgeGenderNet
from agegender.models.registry import CAFFE_MSRA
from agegender.models.resnet import Bottleneck, ResNet, load_torchvision_state_dict
from agegender.paths import data_root

INIT_SOURCES = ("none", "msra", "torchvision", "dlib")  # dlib: train/init_dlib.py, for dlib_resnet29
MSRA_FILES = 312
MSRA_BN_EPS = 1e-5  # Caffe's BatchNorm eps in this model, the same as PyTorch's default
MSRA_MEAN_FILE = "ResNet_mean.binaryproto.bin"
# torchvision's IMAGENET1K_V2 ResNet-50 weights (top-1 80.9 %); the file name carries its sha256 prefix, which
# torch.hub checks.
TORCHVISION_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
BLOCKS = (3, 4, 6, 3)
_CAFFE_NAME = re.compile(r"^(res|bn|scale)(\d)([a-z])_branch(1|2[abc])$")


def default_msra_dir() -> Path:
    """``$AGEGENDER_DATA/../models/resnet50_imagenet_msra`` (the shared folder beside the data)."""
    return data_root().parent / "models" / "resnet50_imagenet_msra"


@dataclass
class InitReport:
    """Where every source tensor went, and which model tensors were initialised freshly."""

    source: str
    path: str
    loaded: dict[str, str] = field(default_factory=dict)  # model tensor -> source tensor
    folded: dict[str, str] = field(default_factory=dict)  # source tensor -> what it was folded into
    checked: dict[str, str] = field(default_factory=dict)  # source tensor -> what it confirmed
    skipped: dict[str, str] = field(default_factory=dict)  # source tensor -> why
    fresh: list[str] = field(default_factory=list)  # model tensors initialised here, not loaded

    def per_layer(self) -> dict[str, int]:
        """Loaded model tensors per top-level part (stem, layer1 … layer4)."""
        counts: dict[str, int] = {}
        for name in self.loaded:
            part = name.split(".")[0]
            part = part if part.startswith("layer") or part in ("blocks", "descriptor") else "stem"
            counts[part] = counts.get(part, 0) + 1
        return counts

    def summary(self) -> str:
        layers = ", ".join(f"{k} {v}" for k, v in sorted(self.per_layer().items()))
        return (f"{self.source} init from {self.path}: {len(self.loaded)} tensors loaded ({layers}), "
                f"{len(self.folded)} folded, {len(self.checked)} checked, "
                f"{len(self.skipped)} skipped, {len(self.fresh)} model tensors initialised freshly")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "per_layer": self.per_layer(), "loaded": self.loaded,
                "folded": self.folded, "checked": self.checked, "skipped": self.skipped,
                "fresh": self.fresh}


# ---------------------------------------------------------------------------------------------------------- MSRA
def caffe_to_torch(name: str) -> tuple[str, str] | None:
    """``res3b_branch2a`` → (``layer2.1.conv1``, ``layer2.1.bn1``); ``conv1``/``bn_conv1``/``scale_conv1`` → the
    stem. Returns (convolution module, BatchNorm module) names, or None for a name outside the trunk."""
    if name in ("conv1", "bn_conv1", "scale_conv1"):
        return "conv1", "bn1"
    m = _CAFFE_NAME.match(name)
    if not m:
        return None
    stage, block, branch = int(m.group(2)), ord(m.group(3)) - ord("a"), m.group(4)
    prefix = f"layer{stage - 1}.{block}"
    if branch == "1":
        return f"{prefix}.downsample.0", f"{prefix}.downsample.1"
    i = "abc".index(branch[1]) + 1
    return f"{prefix}.conv{i}", f"{prefix}.bn{i}"


def read_msra(folder: Path) -> dict[str, np.ndarray]:
    """Every ``NAME.K.bin`` of the folder as a flat float32 array, keyed ``NAME.K``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: MSRA ResNet-50 tensors not found (--init-path, or set AGEGENDER_DATA "
                                "so that ../models/resnet50_imagenet_msra is beside it)")
    return {p.name[:-4]: np.fromfile(p, "<f4") for p in sorted(folder.glob("*.bin"))}


def load_msra(backbone: ResNet, folder: Path | str | None = None) -> InitReport:
    """Map the MSRA tensors onto ``backbone`` (a v1-layout ResNet-50) and initialise the rest freshly."""
    if getattr(backbone, "layout", None) != "v1":
        raise ValueError("the MSRA weights are v1-layout (stride in the first 1x1 convolution): build the ResNet "
                         "with layout='v1'")
    folder = Path(folder) if folder else default_msra_dir()
    blobs = read_msra(folder)
    report = InitReport("msra", str(folder))
    state = backbone.state_dict()
    new: dict[str, torch.Tensor] = {}

    def put(key: str, source: str, values: np.ndarray) -> None:
        target = state[key]
        if values.size != target.numel():
            raise ValueError(f"{source}: {values.size} values, but {key} has shape {tuple(target.shape)}")
        new[key] = torch.from_numpy(values.copy()).view_as(target).to(target.dtype)
        report.loaded[key] = source

    for key in sorted(blobs):
        caffe, index = key.rsplit(".", 1)
        if key == MSRA_MEAN_FILE[:-4]:
            means = blobs[key].reshape(3, -1).mean(1)  # BGR
            if not np.allclose(means, CAFFE_MSRA.mean, atol=0.01):
                raise ValueError(f"{key}: per-channel means {means.round(2)} differ from the caffe_msra preset "
                                 f"{CAFFE_MSRA.mean}")
            report.checked[key] = f"per-channel BGR means {means.round(2).tolist()} = caffe_msra preset"
            continue
        if caffe == "fc1000":
            report.skipped[key] = "ImageNet classifier: this model has age and gender heads instead"
            continue
        mapped = caffe_to_torch(caffe)
        if mapped is None:
            raise ValueError(f"{folder / key}.bin: unknown tensor name")
        conv, bn = mapped
        if caffe.startswith(("res", "conv")):
            if index == "0":
                put(f"{conv}.weight", key, blobs[key])
            elif caffe == "conv1" and index == "1":
                report.folded[key] = "bn1.running_mean (running_mean - bias)"
            else:
                raise ValueError(f"{key}: unexpected blob")
            continue
        conv_blob = "conv1.0" if caffe.endswith("_conv1") else \
            "res" + caffe.removeprefix("bn").removeprefix("scale") + ".0"
        if conv_blob not in blobs:
            report.skipped[key] = f"statistics/affine of {conv}, whose convolution weights are missing"
            continue
        if caffe.startswith("bn"):
            if index == "2":
                factor = float(blobs[key][0])
                if factor != 1.0:
                    raise ValueError(f"{key}: Caffe moving-average factor {factor}, expected 1.0")
                report.checked[key] = "Caffe moving-average factor 1.0 (mean and variance used as stored)"
            else:
                put(f"{bn}.{'running_mean' if index == '0' else 'running_var'}", key, blobs[key])
        else:  # scale: gamma, beta
            put(f"{bn}.{'weight' if index == '0' else 'bias'}", key, blobs[key])
    if "conv1.1" in blobs:
        new["bn1.running_mean"] = new["bn1.running_mean"] - torch.from_numpy(blobs["conv1.1"].copy())

    _fresh_init(backbone, set(new), report)
    backbone.load_state_dict({**backbone.state_dict(), **new}, strict=True)
    return report


def _fresh_init(backbone: ResNet, loaded: set[str], report: InitReport) -> None:
    """He-normal convolutions and BatchNorm 1/0 for every module with nothing loaded; zero the last BatchNorm of
    each residual block whose convolutions are not all loaded."""
    with torch.no_grad():
        for name, module in backbone.named_modules():
            if isinstance(module, nn.Conv2d) and f"{name}.weight" not in loaded:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                report.fresh.append(f"{name}.weight")
            elif isinstance(module, nn.BatchNorm2d) and f"{name}.running_mean" not in loaded:
                module.reset_parameters()  # weight 1, bias 0, running mean 0, variance 1
                report.fresh += [f"{name}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        for name, module in backbone.named_modules():
            if isinstance(module, Bottleneck) and not all(
                    f"{name}.conv{i}.weight" in loaded for i in (1, 2, 3)):
                nn.init.zeros_(module.bn3.weight)


# --------------------------------------------------------------------------------------------------- torchvision
def load_torchvision(backbone: ResNet, path: Path | str | None = None) -> InitReport:
    """torchvision's ImageNet ResNet-50 state dict (v1.5 layout) from ``path`` or, with ``path=None``, from
    ``torch.hub`` (downloaded once into ``$TORCH_HOME``; needs internet the first time)."""
    if getattr(backbone, "layout", None) != "v1.5":
        raise ValueError("torchvision's ResNet-50 weights are v1.5-layout: build the ResNet with layout='v1.5'")
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        where = str(path)
    else:
        try:
            state = torch.hub.load_state_dict_from_url(TORCHVISION_URL, map_location="cpu", check_hash=True,
                                                       weights_only=True)
        except Exception as exc:  # no internet, proxy, …: say what to do instead
            raise SystemExit(f"--init torchvision: could not get {TORCHVISION_URL} ({exc}); download it elsewhere "
                             "and pass --init-path FILE.pth, or use --init msra") from None
        where = TORCHVISION_URL
    if not isinstance(state, dict) or "conv1.weight" not in state:
        raise ValueError(f"{where} is not a torchvision ResNet-50 state dict")
    report = InitReport("torchvision", where)
    for key in state:
        if key.startswith("fc."):
            report.skipped[key] = "ImageNet classifier: this model has age and gender heads instead"
        elif not key.endswith("num_batches_tracked"):
            report.loaded[key] = key
    load_torchvision_state_dict(backbone, state)
    return report


# ----------------------------------------------------------------------------------------------------- dispatcher
def initialise(net: AgeGenderNet, source: str, path: Path | str | None = None) -> InitReport:
    """Load ``source`` weights into ``net``'s backbone (heads stay as AgeGenderNet drew them)."""
    if source == "dlib" or net.backbone_name == "dlib_resnet29":
        from agegender.models.registry import DLIB
        from train.init_dlib import load_dlib

        if source != "dlib" or net.backbone_name != "dlib_resnet29":
            raise SystemExit("--init dlib is for dlib_resnet29 (and dlib_resnet29 starts from --init dlib)")
        if net.normalization != DLIB:
            raise ValueError("dlib's weights expect the dlib normalisation (RGB, 0-255, minus the mean, / 256)")
        report = load_dlib(net.backbone, path)
        report.fresh += [f"{head}.{p}" for head in ("age_head", "gender_head") for p in ("weight", "bias")]
        return report
    if net.backbone_name != "resnet50":
        raise SystemExit(f"--init {source} is for resnet50; {net.backbone_name} uses --pretrained")
    if source == "msra":
        if net.normalization != CAFFE_MSRA:
            raise ValueError("MSRA weights expect the caffe_msra normalisation (BGR, 0-255, minus the mean)")
        report = load_msra(net.backbone, path)
    elif source == "torchvision":
        report = load_torchvision(net.backbone, path)
    else:
        raise ValueError(f"--init must be one of {INIT_SOURCES}, not {source!r}")
    report.fresh += [f"{head}.{p}" for head in ("age_head", "gender_head") for p in ("weight", "bias")]
    return report


def env_path(value: str | None) -> Path | None:
    return Path(os.path.expandvars(os.path.expanduser(value))) if value else None
