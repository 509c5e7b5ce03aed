"""The crop cache of ``train.preprocess`` as PyTorch datasets, samplers and loaders.

Crops are memory-mapped, opened lazily in each process: DataLoader workers and DDP ranks share the page cache
instead of each holding a copy of ~1.7 GB of crops.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .augment import augment_applied

DEFAULT_CONTEXT = 1.25  # what train.preprocess uses when its preprocess.json is missing


@dataclass(frozen=True)
class CropSplit:
    """One ``{set}_{split}`` of the cache, optionally a subset of its rows (``--limit-train/--limit-val``)."""

    dataset: str
    split: str
    images: Path
    rows: np.ndarray  # indices into the .npy
    ages: np.ndarray
    genders: np.ndarray
    crop_size: int
    teacher: np.ndarray | None = None  # (rows, 102) distillation targets (train.distill), aligned with ``rows``

    def __len__(self) -> int:
        return len(self.rows)


def cache_context(cache: Path) -> float:
    """The context factor the cache was made with (the inference crop is its central 1/context)."""
    meta = cache / "preprocess.json"
    return float(json.loads(meta.read_text()).get("context", DEFAULT_CONTEXT)) if meta.is_file() else DEFAULT_CONTEXT


def load_split(cache: Path, dataset: str, split: str, limit: int | None = None, seed: int = 0) -> CropSplit:
    """Labels of a cached split and the shape of its crops; ``limit`` keeps a seeded random subset."""
    images, labels = cache / f"{dataset}_{split}.npy", cache / f"{dataset}_{split}.csv"
    if not images.is_file() or not labels.is_file():
        raise FileNotFoundError(f"{images} not found: build the crop cache with "
                                f"`python -m train.preprocess --cache {cache} --sets {dataset}`")
    with open(labels, newline="") as fh:
        table = list(csv.DictReader(fh))
    shape = np.load(images, mmap_mode="r").shape
    if shape[0] != len(table) or shape[1] != shape[2]:
        raise ValueError(f"{images} holds {shape} crops but {labels} has {len(table)} rows")
    rows = np.arange(len(table))
    if limit is not None and limit < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    ages = np.array([int(table[i]["age"]) for i in rows], dtype=np.int64)
    genders = np.array([int(table[i]["gender"]) for i in rows], dtype=np.int64)
    return CropSplit(dataset, split, images, rows, ages, genders, crop_size=shape[1])


def with_teacher(split: CropSplit, path: Path) -> CropSplit:
    """``split`` with its distillation targets from ``path`` (``python -m train.distill``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: compute the distillation targets with "
                                f"`python -m train.distill --cache {path.parent}`")
    teacher = np.load(path, mmap_mode="r")
    if len(teacher) <= int(split.rows.max(initial=0)):
        raise ValueError(f"{path} holds {len(teacher)} rows, fewer than {split.images}")
    return dataclasses.replace(split, teacher=np.asarray(teacher[split.rows], dtype=np.float32))


class _Crops(Dataset):
    """Crops of several splits, concatenated; the memory maps are opened on first access in each process."""

    def __init__(self, splits: list[CropSplit], transform: A.Compose, mark_degraded: bool = False):
        self.splits = splits
        self.transform = transform
        # Append whether the wild generator degraded the sample (a bool), for ``--balance-scope degraded``.
        self.mark_degraded = mark_degraded
        self.offsets = np.cumsum([0] + [len(s) for s in splits])
        self._maps: list[np.ndarray] | None = None
        self.distill = any(s.teacher is not None for s in splits)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}  # never pickle a memory map into a worker

    def _load(self, index: int, seed: int | None) -> tuple[torch.Tensor, int, int]:
        if self._maps is None:
            self._maps = [np.load(s.images, mmap_mode="r") for s in self.splits]
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        split, row = self.splits[part], index - int(self.offsets[part])
        crop = np.array(self._maps[part][split.rows[row]])  # a writable copy, not a view of the read-only map
        image, applied = augment_applied(self.transform, crop, seed)
        sample = (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), int(split.ages[row]),
                  int(split.genders[row]))
        if self.distill:
            # Faces without teacher targets (AFLW) get zeros: no distillation loss (the loss is linear in the target).
            teacher = split.teacher[row] if split.teacher is not None else np.zeros(102, np.float32)
            sample = (*sample, torch.from_numpy(np.asarray(teacher, np.float32)))
        if self.mark_degraded:
            sample = (*sample, "WildDegradation" in applied)
        return sample


class TrainCrops(_Crops):
    """Training crops, indexed by ``(index, epoch)`` from :class:`EpochSampler`; each is augmented with a seed
    derived from (run seed, epoch, index)."""

    def __init__(self, splits: list[CropSplit], transform: A.Compose, seed: int, mark_degraded: bool = False):
        super().__init__(splits, transform, mark_degraded)
        self.seed = seed

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, epoch = key
        seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        return self._load(index, seed)


class EvalCrops(_Crops):
    """Validation crops: the deterministic inference crop."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self._load(index, None)


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled per ``set_epoch``, sharded per rank) that yields ``(index, epoch)`` and
    can start ``skip`` samples into the epoch — how a run resumed mid-epoch continues exactly where it stopped."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.skip:]
        return iter([(i, self.epoch) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def _worker_init(_: int) -> None:
    # Few cores shared by the trainer and its workers: one thread per worker, or they fight each other.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def make_loader(dataset: Dataset, batch_size: int, workers: int, pin_memory: bool,
                sampler: EpochSampler | None = None, shuffle_seed: int = 0) -> DataLoader:
    """A DataLoader with single-threaded, persistent workers; training loaders drop the last partial batch
    (BatchNorm cannot train on a batch of one).

    Workers are *spawned*, not forked: a fork inherits OpenCV's thread pool without its threads, and the first
    OpenCV call in the child then waits forever for them (seen whenever the parent had augmented images itself,
    e.g. an earlier run in the same process). Persistent workers pay the few seconds of start-up once per run."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin_memory,
        drop_last=sampler is not None, persistent_workers=workers > 0, worker_init_fn=_worker_init,
        multiprocessing_context="spawn" if workers > 0 else None,
        # Worker seeds come from this generator, not torch's global one (whose state the checkpoint restores).
        generator=torch.Generator().manual_seed(shuffle_seed),
        prefetch_factor=4 if workers > 0 else None,
    )
