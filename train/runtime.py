"""The small pieces of a training run's machinery that are not the loop: seeding, the learning-rate schedule,
mixed precision and a line naming the hardware (recorded in every checkpoint, so a report says where it ran)."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
from typing import Any, Callable

import numpy as np
import torch

from .distributed import Dist


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier per optimizer step: linear warm-up to 1, then cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def autocast_and_scaler(device: torch.device, precision: str) -> tuple[Callable[[], Any], torch.amp.GradScaler, str]:
    """(autocast context factory, grad scaler, resolved precision). bf16 needs no loss scaling; fp16 does."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if precision == "fp32":
        return contextlib.nullcontext, scaler, precision
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler, precision


def hardware(ctx: Dist) -> str:
    if ctx.device.type == "cuda":
        return f"{ctx.world_size}x {torch.cuda.get_device_name(ctx.device)}"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    return f"{ctx.world_size}x CPU process on {cpu} ({os.cpu_count()} cores), torch {torch.__version__}"
