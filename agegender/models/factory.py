"""Backbones by name: the built-in architecture files are imported here, on first use, so that each file can
register itself with :mod:`.registry` (timm-style) without the registry importing them back, and importing the
registry never drags in an architecture's dependencies."""

from __future__ import annotations

from typing import Any

from torch import nn

from agegender.models.registry import BackboneSpec, registered, registered_names


def _load_builtin() -> None:
    from agegender.models import dlib_resnet, efficientnet_lite, resnet  # noqa: F401  (they register on import)


def list_backbones() -> list[str]:
    _load_builtin()
    return registered_names()


def backbone_spec(name: str) -> BackboneSpec:
    _load_builtin()
    spec = registered(name)
    if spec is None:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(registered_names())}")
    return spec


def create_backbone(name: str, pretrained: bool = False, input_size: int | None = None, **options: Any) -> nn.Module:
    """``options`` are architecture variants the factory accepts (e.g. ``layout="v1"`` for ResNet-50)."""
    spec = backbone_spec(name)
    return spec.factory(pretrained=pretrained, input_size=input_size or spec.input_size, **options)
