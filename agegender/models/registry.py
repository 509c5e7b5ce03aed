"""Backbone registry (timm-style): one architecture per file, registered by name.

A backbone is an ``nn.Module`` with ``num_features`` and ``forward_features(x) -> (B, C, H, W)``. The
registry also records what the architecture expects as input, so weights, crops and normalisation stay
consistent between training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Normalization:
    """How a set of weights expects its pixels: ``(pixel[channel_order] / 255 * scale - mean) / std``.

    Weights are trained under one convention and silently give worse answers under another, so the convention
    travels with them (the checkpoint's config, the manifest entry, the safetensors metadata) instead of being
    assumed per architecture. ``mean``/``std`` are per channel *in* ``channel_order`` and on the ``scale`` range
    (1.0: pixels in 0-1, as torchvision; 255.0: pixels in 0-255, as Caffe). :meth:`rgb_unit` restates them the
    way the pipeline applies them (RGB order, 0-1 units); the network itself reorders channels for BGR weights.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, not {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0 or self.scale <= 0:
            raise ValueError(f"bad normalisation: mean {self.mean}, std {self.std}, scale {self.scale}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "scale", float(self.scale))

    def rgb_unit(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) in RGB order and 0-1 pixel units: ``(rgb / 255 - mean) / std`` is the network's input
        (before the network's own reordering to ``channel_order``)."""
        order = slice(None) if self.channel_order == "RGB" else slice(None, None, -1)
        return (tuple(m / self.scale for m in self.mean[order]), tuple(s / self.scale for s in self.std[order]))

    def as_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "channel_order": self.channel_order,
                "scale": self.scale}

    @classmethod
    def from_any(cls, value: "Normalization | Mapping[str, Any] | str") -> "Normalization":
        """A :class:`Normalization` from itself, its :meth:`as_dict`, or a preset name (:data:`NORMALIZATIONS`)."""
        if isinstance(value, Normalization):
            return value
        if isinstance(value, str):
            try:
                return NORMALIZATIONS[value]
            except KeyError:
                raise ValueError(f"unknown normalisation {value!r}; known: {', '.join(NORMALIZATIONS)}") from None
        return cls(mean=tuple(value["mean"]), std=tuple(value["std"]),
                   channel_order=str(value.get("channel_order", "RGB")), scale=float(value.get("scale", 1.0)))


IMAGENET = Normalization(IMAGENET_MEAN, IMAGENET_STD, "RGB", 1.0)
# The MSRA (Caffe) ResNet-50: BGR, 0-255, minus the per-channel mean of its mean image, no division.
CAFFE_MSRA = Normalization((103.06, 115.90, 123.15), (1.0, 1.0, 1.0), "BGR", 255.0)
# dlib's face-recognition network: RGB, 0-255, minus its training set's mean colour, divided by 256.
DLIB = Normalization((122.782, 117.001, 104.298), (256.0, 256.0, 256.0), "RGB", 255.0)
NORMALIZATIONS: dict[str, Normalization] = {"imagenet": IMAGENET, "caffe_msra": CAFFE_MSRA, "dlib": DLIB}


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    factory: Callable[..., nn.Module]
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    description: str = ""
    default_normalization: Normalization | None = None

    @property
    def normalization(self) -> Normalization:
        """The default input convention (weights that record their own override it)."""
        return self.default_normalization or Normalization(self.mean, self.std, "RGB", 1.0)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, input_size: int, description: str = "",
                      normalization: Normalization | None = None):
    """Decorator for a factory ``fn(pretrained: bool = False, input_size: int = ...) -> nn.Module``;
    ``normalization``: the input convention of its pretrained weights where it is not ImageNet's."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = BackboneSpec(name=name, factory=factory, input_size=input_size, description=description,
                                       default_normalization=normalization)
        return factory

    return wrap


def registered(name: str) -> BackboneSpec | None:
    """The spec registered under ``name`` so far (the built-in files register on import: use
    :func:`agegender.models.factory.backbone_spec`, which imports them first)."""
    return _REGISTRY.get(name)


def registered_names() -> list[str]:
    return sorted(_REGISTRY)

