"""Exponential moving average of the weights (``--ema``): a smoother model to validate and export.

BatchNorm running statistics are averaged like the weights, so the EMA model is self-consistent. The decay
ramps up as ``(1 + n) / (10 + n)`` towards ``decay``, so short runs are not dominated by the random init.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the live ``model`` (the unwrapped module, not its DDP/compile wrapper) into the average."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        averaged, current = [], []
        for name, value in self.module.state_dict().items():
            if value.is_floating_point():
                averaged.append(value)
                current.append(live[name])
            else:
                value.copy_(live[name])  # BatchNorm's num_batches_tracked
        torch._foreach_lerp_(averaged, current, 1.0 - decay)  # one fused kernel per dtype/device, not per tensor

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
