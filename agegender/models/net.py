"""AgeGenderNet: a registered backbone, global pooling, dropout and two heads.

The age head is a softmax over 101 one-year bins (0 … 100, the last meaning 100+): a distribution rather than
a single regressed number, so the app can show an interval, age-group probabilities and P(age ≥ t) from the same
output. The gender head is one logit; sigmoid gives P(female).

What a set of weights needs besides its tensors — the input size, architecture variants (ResNet-50's layout) and
the pixel normalisation it was trained under — is recorded with the weights (``train.export`` writes it into the
manifest entry and the safetensors metadata) and read back by :func:`net_options`,
so the inference network is built exactly as the trained one was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from agegender.models.factory import backbone_spec, create_backbone
from agegender.models.registry import Normalization

NUM_AGE_BINS = 101


class AgeGenderNet(nn.Module):
    """``mean``/``std`` (RGB order, 0-1 units) are what callers subtract and divide by, as before;
    ``channel_order`` says whether the network reorders them to BGR itself (weights trained on BGR input)."""

    def __init__(self, backbone: str = "resnet50", dropout: float = 0.2, pretrained: bool = False,
                 input_size: int | None = None, backbone_options: Mapping[str, Any] | None = None,
                 normalization: Normalization | Mapping[str, Any] | str | None = None):
        super().__init__()
        spec = backbone_spec(backbone)
        self.backbone_name = backbone
        self.input_size = input_size or spec.input_size
        self.normalization = spec.normalization if normalization is None else Normalization.from_any(normalization)
        self.mean, self.std = self.normalization.rgb_unit()
        self.channel_order = self.normalization.channel_order
        self.backbone_options = dict(backbone_options or {})
        self.backbone = create_backbone(backbone, pretrained=pretrained, input_size=self.input_size,
                                        **self.backbone_options)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.age_head = nn.Linear(self.backbone.num_features, NUM_AGE_BINS)
        self.gender_head = nn.Linear(self.backbone.num_features, 1)
        # Start from a broad age prior instead of uniform noise; training then sharpens it.
        nn.init.normal_(self.age_head.weight, std=0.01)
        nn.init.zeros_(self.age_head.bias)
        nn.init.normal_(self.gender_head.weight, std=0.01)
        nn.init.zeros_(self.gender_head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding (B, num_features) of RGB input normalised with ``mean``/``std``."""
        if self.channel_order == "BGR":
            x = x.flip(1)
        return torch.flatten(self.pool(self.backbone.forward_features(x)), 1)

    def forward_head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(age logits (B, 101), gender logit (B,))."""
        features = self.dropout(features)
        return self.age_head(features), self.gender_head(features).squeeze(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x))


def net_options(source: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """``AgeGenderNet`` keyword arguments recorded with a set of weights.

    ``source`` is a manifest entry, a ``.safetensors`` path (its metadata, as ``train.export`` writes it) or
    ``None`` (nothing recorded: the backbone's defaults). Entries written before normalisation and layout were
    recorded give the defaults they were trained with (RGB, their ``mean``/``std``, ResNet-50 v1.5). An unreadable
    file gives ``{}``: loading its tensors reports the error."""
    if source is None:
        return {}
    if isinstance(source, (str, Path)):
        try:
            from safetensors import safe_open

            with safe_open(str(source), "pt") as fh:
                meta = fh.metadata() or {}
        except Exception:
            return {}
        source = {k: (json.loads(v) if k in ("normalization", "backbone_options", "mean", "std") else v)
                  for k, v in meta.items()}
    options: dict[str, Any] = {}
    if source.get("input_size"):
        options["input_size"] = int(source["input_size"])
    if source.get("backbone_options"):
        options["backbone_options"] = dict(source["backbone_options"])
    if source.get("normalization"):
        options["normalization"] = Normalization.from_any(source["normalization"])
    elif source.get("mean") and source.get("std"):
        options["normalization"] = Normalization(tuple(source["mean"]), tuple(source["std"]), "RGB", 1.0)
    return options
