"""Backbone registry (timm-style): one architecture per file, registered by name.

A backbone is an ``nn.Module`` with ``num_features`` and ``forward_features(x) -> (B, C, H, W)``. The
registry also records what the architecture expects as input, so weights, crops and normalisation stay
consistent between training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    factory: Callable[..., nn.Module]
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, input_size: int, description: str = ""):
    """Decorator for a factory ``fn(pretrained: bool = False, input_size: int = ...) -> nn.Module``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = BackboneSpec(name=name, factory=factory, input_size=input_size, description=description)
        return factory

    return wrap


def list_backbones() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def backbone_spec(name: str) -> BackboneSpec:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def create_backbone(name: str, pretrained: bool = False, input_size: int | None = None) -> nn.Module:
    spec = backbone_spec(name)
    return spec.factory(pretrained=pretrained, input_size=input_size or spec.input_size)


def _load_builtin() -> None:
    # Imported lazily so that importing the registry never drags in optional architectures' dependencies.
    from . import efficientnet_lite, resnet  # noqa: F401
