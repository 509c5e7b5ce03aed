"""Validation as the app measures it: expected age of the softmax vs. the label (MAE and the share within ±5
years), P(female) ≥ 0.5 accuracy.

Under DDP every rank scores a disjoint shard (``rank::world_size``) of each val set and the *sums* are
all-reduced, so every rank gets the exact metrics of the full val sets — no sample is dropped or counted twice
(``DistributedSampler`` would pad with duplicates).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .distributed import Dist, all_reduce_sum


def shard(dataset: Dataset, ctx: Dist) -> Dataset:
    """This rank's share of a validation set."""
    return Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size)) if ctx.enabled else dataset


@torch.inference_mode()
def validate(model: nn.Module, loaders: dict[str, DataLoader], normalize: nn.Module, ctx: Dist,
             autocast: Callable[[], contextlib.AbstractContextManager]) -> dict[str, float]:
    """``val_mae_{set}``, ``val_within_5_{set}``, ``val_gender_acc_{set}`` per set, then the same without the
    suffix over all of them together (the union of the val sets, i.e. weighted by their sizes)."""
    was_training = model.training
    model.eval()
    bins = None
    sums = {}
    for name, loader in loaders.items():
        # |error| sum, ±5 and count over faces with an age label; correct genders and count over all faces.
        total = torch.zeros(5, dtype=torch.float64, device=ctx.device)
        for images, ages, genders in loader:
            images = normalize(images.to(ctx.device, non_blocking=True))
            with autocast():
                age_logits, gender_logit = model(images)
            if bins is None:
                bins = torch.arange(age_logits.shape[1], device=ctx.device, dtype=torch.float32)
            expected = torch.softmax(age_logits.float(), dim=1) @ bins
            ages, genders = ages.to(ctx.device), genders.to(ctx.device)
            labelled = ages >= 0
            error = (expected - ages.float()).abs()[labelled]
            total[0] += error.sum().double()
            total[1] += (error <= 5).sum().double()  # the evaluation's within_5 (agegender.evaluation)
            total[2] += labelled.sum().double()
            total[3] += ((gender_logit.float() >= 0).long() == genders).sum().double()  # P(female) ≥ 0.5, as the app
            total[4] += len(ages)
        sums[name] = all_reduce_sum(total, ctx)
    model.train(was_training)
    metrics = {}
    for name, (abs_err, within_5, aged, correct, count) in sums.items():
        if aged > 0:
            metrics[f"val_mae_{name}"] = float(abs_err / aged)
            metrics[f"val_within_5_{name}"] = float(within_5 / aged)
        metrics[f"val_gender_acc_{name}"] = float(correct / count)
    # The combined metrics are over the age-labelled sets only, so a gender-only set (AFLW) never moves the
    # selection MAE nor the gender accuracy comparable with earlier runs; it has its own key.
    aged_sums = [v for v in sums.values() if v[2] > 0]
    abs_err, within_5, aged, correct, count = torch.stack(aged_sums).sum(0)
    metrics["val_mae"] = float(abs_err / aged)
    metrics["val_within_5"] = float(within_5 / aged)
    metrics["val_gender_acc"] = float(correct / count)
    return metrics
