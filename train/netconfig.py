"""One place that turns a run's config into the network's variant options and its pixel normalisation.

Training builds the network from it, and ``train.export`` records the same values in the manifest entry and the
safetensors metadata, which :func:`agegender.models.net_options` reads back at inference. Configs of runs made
before these options existed have no ``layout``/``normalization`` keys and get what those runs used (ResNet-50
v1.5, the backbone's ImageNet mean/std).
"""

from __future__ import annotations

from typing import Any, Mapping

from agegender.models import NORMALIZATIONS, Normalization, backbone_spec

LAYOUT_BACKBONES = ("resnet50",)  # backbones with a ``layout`` option


def resolve_layout(backbone: str, layout: str | None, init: str | None) -> str | None:
    """``auto``/None → the layout the initial weights were trained in (MSRA: v1; torchvision, scratch: v1.5)."""
    if backbone not in LAYOUT_BACKBONES:
        if layout not in (None, "auto"):
            raise SystemExit(f"--layout applies to {', '.join(LAYOUT_BACKBONES)}, not {backbone}")
        return None
    if layout in (None, "auto"):
        return "v1" if init == "msra" else "v1.5"
    return layout


def resolve_normalization(normalization: str | None, init: str | None) -> str:
    """``auto``/None → the convention of the initial weights (MSRA: Caffe BGR 0-255 minus mean; dlib: RGB 0-255
    minus mean, / 256; else ImageNet)."""
    if normalization in (None, "auto"):
        return {"msra": "caffe_msra", "dlib": "dlib"}.get(init or "", "imagenet")
    if normalization not in NORMALIZATIONS:
        raise SystemExit(f"--normalization must be auto or one of {', '.join(NORMALIZATIONS)}")
    return normalization


def net_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``AgeGenderNet`` keyword arguments (besides backbone, dropout, pretrained) of a resolved config."""
    layout = cfg.get("layout")
    name = cfg.get("normalization")
    normalization: Normalization = (NORMALIZATIONS[name] if name and name != "auto"
                                    else backbone_spec(cfg["backbone"]).normalization)
    return {"input_size": cfg.get("input_size"),
            "backbone_options": {"layout": layout} if layout and layout != "auto" else {},
            "normalization": normalization}


def network_record(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest fields that must travel with a run's weights (see ``AgeGenderNet.record``)."""
    kw = net_kwargs(cfg)
    mean, std = kw["normalization"].rgb_unit()
    return {"input_size": kw["input_size"], "backbone_options": kw["backbone_options"],
            "normalization": kw["normalization"].as_dict(), "mean": list(mean), "std": list(std)}


def layout_of(backbone: str, backbone_options: Mapping[str, Any] | None) -> str | None:
    """The layout ``backbone_options`` mean (none recorded: v1.5, what ResNet-50 always was before)."""
    if backbone not in LAYOUT_BACKBONES:
        return None
    return (backbone_options or {}).get("layout") or "v1.5"
