"""What one training run reads: the crop cache's train and val splits of the chosen sets, the gender-only faces in
the wild (MTFL/AFLW), the distillation targets, and the loaders over them.

Why its own module: the trainer should see batches and validation loaders, not how the cache is laid out or how
the sets are checked against one another (one crop size, an inference crop at least the input size).
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from .aflw import NAME as AFLW
from .augment import eval_transform, train_transform
from .data import CropSplit, EpochSampler, EvalCrops, TrainCrops, cache_context, load_split, make_loader, with_teacher
from .distill import teacher_file
from .distributed import Dist
from .validation import shard


@dataclass
class RunData:
    train_splits: list[CropSplit]
    val_splits: list[CropSplit]
    gender_train: list[CropSplit]  # AFLW train (--aflw-train): gender labels only
    gender_val: list[CropSplit]  # AFLW val (--aflw-val): reported, never selected on
    train_set: TrainCrops
    sampler: EpochSampler
    steps_per_epoch: int
    train_loader: DataLoader
    val_loaders: dict[str, DataLoader]

    def summary(self) -> dict[str, Any]:
        """Per set: crop counts and the committed split lists (stored in checkpoints and the manifest)."""
        return {split.dataset: {"train_crops": len(split), "val_crops": len(val),
                                "split_files": [f"train/splits/{split.dataset}_{k}.txt" for k in ("train", "val")]}
                for split, val in zip(self.train_splits, self.val_splits)}


def build_run_data(cfg: argparse.Namespace, ctx: Dist, log: logging.Logger) -> RunData:
    cache = Path(cfg.cache)
    train_splits = [load_split(cache, s, "train", cfg.limit_train, cfg.seed) for s in cfg.sets]
    if cfg.distill_weight > 0 or cfg.distill_gender_weight > 0:  # the Lite0's outputs (python -m train.distill)
        train_splits = [with_teacher(s, teacher_file(cache, s.dataset)) for s in train_splits]
    val_splits = [load_split(cache, s, "val", cfg.limit_val, cfg.seed) for s in cfg.sets]
    gender_train = [load_split(cache, AFLW, "train", cfg.limit_train, cfg.seed)] if cfg.aflw_train else []
    gender_val = [load_split(cache, AFLW, "val", cfg.limit_val, cfg.seed)] if cfg.aflw_val else []
    crop = train_splits[0].crop_size
    if any(s.crop_size != crop for s in train_splits + val_splits + gender_train + gender_val):
        raise SystemExit(f"{cache}: the sets were cached at different crop sizes; rebuild it with one --size")
    by_degradation = cfg.balance and cfg.balance_scope == "degraded"
    if by_degradation and cfg.augment != "wild":
        raise SystemExit("--balance-scope degraded needs --augment wild (the policy that degrades samples)")
    train_set = TrainCrops(train_splits + gender_train, train_transform(crop, cfg.input_size, cfg.augment,
                                                                           cfg.degrade_probability), cfg.seed,
                           mark_degraded=by_degradation)
    sampler = EpochSampler(train_set, ctx.world_size, ctx.rank, cfg.seed)
    steps_per_epoch = sampler.num_samples // cfg.batch_size
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train_set)} training crops make no batch of {cfg.batch_size} per process")
    pin = ctx.device.type == "cuda"
    train_loader = make_loader(train_set, cfg.batch_size, cfg.workers, pin, sampler, cfg.seed)
    context = cache_context(cache)
    inference_crop = round(crop / context)
    if inference_crop < cfg.input_size:
        log.warning(f"{cache} holds {inference_crop} px inference crops, below the input size {cfg.input_size}: "
                    f"every image is upsampled; rebuild it with train.preprocess "
                    f"--size {math.ceil(cfg.input_size * context)}")
    evaluate = eval_transform(crop, context, cfg.input_size)
    # Validation crops need no augmentation: reading them in the main process costs less than more workers.
    val_loaders = {s.dataset: make_loader(shard(EvalCrops([s], evaluate), ctx), 2 * cfg.batch_size, 0, pin)
                   for s in val_splits + gender_val}
    return RunData(train_splits, val_splits, gender_train, gender_val, train_set, sampler, steps_per_epoch,
                   train_loader, val_loaders)
