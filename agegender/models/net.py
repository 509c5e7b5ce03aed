"""AgeGenderNet: a registered backbone, global pooling, dropout and two heads.

The age head is a softmax over 101 one-year bins (0 … 100, the last meaning 100+): a distribution rather than
a single regressed number, so the app can show an interval, age-group probabilities and P(age ≥ t) from the same
output. The gender head is one logit; sigmoid gives P(female).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import backbone_spec, create_backbone

NUM_AGE_BINS = 101


class AgeGenderNet(nn.Module):
    def __init__(self, backbone: str = "resnet50", dropout: float = 0.2, pretrained: bool = False,
                 input_size: int | None = None):
        super().__init__()
        spec = backbone_spec(backbone)
        self.backbone_name = backbone
        self.input_size = input_size or spec.input_size
        self.mean, self.std = spec.mean, spec.std
        self.backbone = create_backbone(backbone, pretrained=pretrained, input_size=self.input_size)
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
        """Pooled embedding (B, num_features)."""
        return torch.flatten(self.pool(self.backbone.forward_features(x)), 1)

    def forward_head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(age logits (B, 101), gender logit (B,))."""
        features = self.dropout(features)
        return self.age_head(features), self.gender_head(features).squeeze(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x))
