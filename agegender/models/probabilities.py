"""The network as the engines run it: uint8 RGB crops (N, S, S, 3) in, (age_probs (N, 101), p_female (N,)) out.

Normalisation, the NHWC → NCHW transpose, the softmax and the sigmoid live *inside* the module, so the torch
engine and the exported ONNX graph compute exactly the same function from the same bytes, and no caller can
normalise crops differently from what the weights expect (mean/std/channel order travel with the network).
"""

from __future__ import annotations

import torch
from torch import nn

from agegender.models.net import AgeGenderNet


class ProbabilityModel(nn.Module):
    """``AgeGenderNet`` wrapped for inference: uint8 NHWC crops → probabilities (float32)."""

    def __init__(self, net: AgeGenderNet):
        super().__init__()
        self.net = net
        self.input_size = net.input_size
        mean = torch.tensor(net.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(net.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.register_buffer("scale", 1.0 / std, persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # RGB, normalised with the network's RGB-ordered mean/std; a network trained on BGR (the MSRA ResNet-50)
        # reorders the channels itself (AgeGenderNet.channel_order).
        x = crops.permute(0, 3, 1, 2).to(torch.float32)
        x = x * self.scale + self.shift
        age_logits, gender_logit = self.net(x)
        return torch.softmax(age_logits.float(), dim=1), torch.sigmoid(gender_logit.float())
