"""The PyTorch engine: any :class:`agegender.models.AgeGenderNet` (bundled, freshly trained, or untrained for
tests), on the CPU or a GPU. Needs the ``[torch]`` extra; imported only when chosen."""

from __future__ import annotations

import numpy as np
import torch

from agegender.models import AgeGenderNet
from agegender.models.probabilities import ProbabilityModel
from agegender.engines.base import EngineOutput
from agegender.engines import threads as thread_policy


class TorchEngine:
    name = "torch"

    def __init__(self, net: AgeGenderNet, device: str = "cpu", source: str = ""):
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        if self.device.type == "cpu":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.model = ProbabilityModel(self.net).eval().to(self.device)
        self.input_size = int(net.input_size)
        self.source = source

    @torch.inference_mode()
    def run(self, crops: np.ndarray) -> EngineOutput:
        x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.uint8)).to(self.device)
        with thread_policy.INFERENCE_SLOTS:
            age_probs, p_female = self.model(x)
        return age_probs.float().cpu().numpy(), p_female.float().cpu().numpy()

    def describe(self) -> dict:
        return {"engine": self.name, "precision": "float32", "threads": torch.get_num_threads(),
                "device": str(self.device), "file": self.source}
