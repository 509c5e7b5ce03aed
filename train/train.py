"""Train AgeGenderNet on cached crops: ``python -m train`` (one process) or ``torchrun ... -m train`` (DDP).

One run lives in ``--out``: ``last.pt`` / ``best.pt`` (every validation), ``metrics.csv``, ``curves.png`` and
``train.log``. A run stopped by ``--time-budget`` or ``--max-steps`` — or killed — continues with ``--resume``
from the exact step it saved, with the same optimizer, schedule, EMA and random state.
"""

from __future__ import annotations

import argparse
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import checkpoint, distributed
from .aflw import NAME as AFLW
from .augment import Normalize, mixup
from .config import resolve
from .distributed import Dist
from .ema import ModelEMA
from .freezing import StageFreezer
from .losses import AgeGenderLoss, decade_weights
from .model_init import build_model, init_from
from .parts import param_groups
from .run_data import build_run_data
from .runlog import append_metrics, plot_curves, setup_logger
from .runtime import autocast_and_scaler, hardware, seed_everything, warmup_cosine
from .validation import validate

LOG_EVERY = 20  # steps between progress-bar loss updates (each one syncs the GPU)
BUDGET_SYNC_EVERY = 10  # steps between the ranks' agreement on --time-budget


class Trainer:
    """Holds one run's state; :meth:`fit` trains until the schedule ends, early stopping, or a stop limit."""

    def __init__(self, cfg: argparse.Namespace, ctx: Dist, started: float, argv: list[str]):
        self.cfg, self.ctx, self.started = cfg, ctx, started
        self.out = Path(cfg.out)
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        distributed.barrier(ctx)
        self.log = setup_logger(self.out, ctx.is_main)
        if not cfg.resume and (self.out / checkpoint.LAST).exists():
            raise SystemExit(f"{self.out} already holds a run: pass --resume to continue it, or another --out")
        if cfg.resume and not (self.out / checkpoint.LAST).exists():
            raise SystemExit(f"--resume: {self.out / checkpoint.LAST} not found")
        seed_everything(cfg.seed)
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")

        self.net = build_model(cfg, self.log, ctx.is_main)
        cfg.input_size = self.net.input_size
        self.parent: dict[str, Any] | None = None
        if cfg.init_from and not cfg.resume:  # a resumed run restores its own weights below
            self.parent = init_from(self.net, Path(cfg.init_from), cfg)
            self.log.info(f"initialised from {cfg.init_from} ({self.parent['weights']} weights, "
                          f"val MAE {self.parent['val_mae']:.3f})")
        self.net = self.net.to(ctx.device, memory_format=torch.channels_last)  # faster on CPU too (measured)
        self.normalize = Normalize(self.net.mean, self.net.std, channels_last=True).to(ctx.device)
        self.data = build_run_data(cfg, ctx, self.log)
        self.steps_per_epoch = self.data.steps_per_epoch
        self.ema = ModelEMA(self.net, cfg.ema) if cfg.ema > 0 else None
        self.optimizer = torch.optim.AdamW(param_groups(self.net, cfg.weight_decay, cfg.lr, cfg.lr_mult),
                                           lr=cfg.lr, fused=ctx.device.type == "cuda")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.freezer = StageFreezer(self.net, cfg.freeze, round(cfg.freeze_epochs * self.steps_per_epoch),
                                    ctx.enabled)
        warmup = min(round(cfg.warmup_epochs * self.steps_per_epoch), self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, max(warmup, 1), cfg.min_lr_ratio))
        self.autocast, self.scaler, cfg.precision = autocast_and_scaler(ctx.device, cfg.precision)
        ages = [s.ages for s in self.data.train_splits + self.data.gender_train]
        balance = decade_weights(np.concatenate(ages)) if cfg.balance else None
        self.loss_fn = AgeGenderLoss(cfg.age_sigma, cfg.age_loss, cfg.gender_smoothing, cfg.gender_weight,
                                     balance, cfg.age_l1, cfg.distill_weight,
                                     cfg.distill_gender_weight).to(ctx.device)

        self.epoch, self.epoch_step, self.step = 0, 0, 0
        self.best, self.best_epoch, self.bad_epochs = math.inf, 0, 0
        self.elapsed = 0.0  # training seconds of earlier invocations
        self.commands: list[str] = []
        if cfg.resume:
            self._restore(checkpoint.load(self.out / checkpoint.LAST))
        self.commands.append(shlex.join(["python", "-m", "train", *argv])
                             + (f"  # torchrun, world size {ctx.world_size}" if ctx.enabled else ""))

        self.freezer.set(self.step < self.freezer.steps)
        self._wrap()

    def _wrap(self) -> None:
        """``self.model``: the network, under DDP and/or torch.compile."""
        cfg, ctx = self.cfg, self.ctx
        self.model: nn.Module = self.net
        if ctx.enabled:
            self.model = DistributedDataParallel(self.net, device_ids=[ctx.local_rank] if ctx.device.type == "cuda"
                                                 else None)
        if cfg.compile:
            self.model = torch.compile(self.model)

    def _restore(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.epoch_step, self.step = state["epoch"], state["epoch_step"], state["step"]
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        self.elapsed, self.commands = state["elapsed"], list(state["commands"])
        self.parent = state.get("parent")
        checkpoint.restore_rng(state["rng"])
        if state["world_size"] != self.ctx.world_size and self.epoch_step:
            self.log.info(f"resuming with {self.ctx.world_size} processes instead of {state['world_size']}: "
                          "the interrupted epoch continues at the same step, not at the same samples")
        self.log.info(f"resumed {self.out / checkpoint.LAST}: epoch {self.epoch}, step {self.step}, "
                      f"best val MAE {self.best:.3f}")

    # ------------------------------------------------------------------ state
    def state(self, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "epoch_step": self.epoch_step, "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "metrics": metrics,
            "rng": checkpoint.rng_state(),
            "config": vars(self.cfg),
            "world_size": self.ctx.world_size,
            "elapsed": self.elapsed + time.monotonic() - self.started,
            "hardware": hardware(self.ctx),
            "commands": self.commands,
            "parent": self.parent,
            "data": self.data.summary(),
        }

    def over_budget(self) -> bool:
        if self.cfg.time_budget is None:
            return False
        over = time.monotonic() - self.started > 60 * self.cfg.time_budget
        if not self.ctx.enabled:
            return over
        return self.step % BUDGET_SYNC_EVERY == 0 and distributed.any_rank(over, self.ctx)

    # ------------------------------------------------------------------ loop
    def train_step(self, images: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor,
                   teacher: torch.Tensor | None = None, degraded: torch.Tensor | None = None) -> torch.Tensor:
        """One optimizer step; returns the detached (total, age, gender) losses. ``degraded``: which samples the
        wild policy degraded (``--balance-scope degraded``: only they take the decade weights)."""
        device = self.ctx.device
        self.freezer.before_step(self.step, self.log.info)
        images = images.to(device, non_blocking=True).float()
        age_t, gender_t, weight = self.loss_fn.targets(
            ages.to(device, non_blocking=True), genders.to(device, non_blocking=True),
            None if degraded is None else degraded.to(device, non_blocking=True))
        extra = () if teacher is None else (teacher.to(device, non_blocking=True),)  # 101 age bins + P(female)
        if self.cfg.mixup > 0:
            # Mixing raw pixels equals mixing normalised ones (normalisation is affine, λ + (1 - λ) = 1).
            images, (age_t, gender_t, weight, *extra) = mixup(images, (age_t, gender_t, weight, *extra),
                                                              self.cfg.mixup)
        with self.autocast():
            age_logits, gender_logit = self.model(self.normalize(images))
        loss, age_loss, gender_loss = self.loss_fn(age_logits, gender_logit, age_t, gender_t, weight, *extra)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.freezer.drop_gradients()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.net)
        self.step += 1
        self.epoch_step += 1
        return torch.stack([loss, age_loss, gender_loss]).detach()

    def fit(self) -> None:
        cfg, ctx, log = self.cfg, self.ctx, self.log
        log.info(f"{cfg.backbone} (pretrained={cfg.pretrained}) at {cfg.input_size}px on {hardware(ctx)}, "
                 f"{cfg.precision}; {len(self.data.train_set)} training crops from {', '.join(cfg.sets)}, "
                 f"{self.steps_per_epoch} steps/epoch x {cfg.epochs} epochs, "
                 f"global batch {cfg.batch_size * ctx.world_size}; out {self.out}")
        stop = self.bad_epochs >= cfg.patience or self.epoch >= cfg.epochs or \
            (cfg.max_steps is not None and self.step >= cfg.max_steps)
        while not stop:
            epoch_started = time.monotonic()
            self.data.sampler.set_epoch(self.epoch)
            self.data.sampler.skip = self.epoch_step * cfg.batch_size
            sums = torch.zeros(4, device=ctx.device, dtype=torch.float64)  # 3 losses, steps
            reason = None
            bar = tqdm(self.data.train_loader, total=self.steps_per_epoch, initial=self.epoch_step,
                       disable=not ctx.is_main, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", dynamic_ncols=True,
                       leave=False, mininterval=1.0 if sys.stderr.isatty() else 60.0)
            for images, ages, genders, *rest in bar:
                teacher = rest.pop(0) if self.data.train_set.distill else None
                degraded = rest.pop(0) if self.data.train_set.mark_degraded else None
                losses = self.train_step(images, ages, genders, teacher, degraded)
                sums[:3] += losses.double()
                sums[3] += 1
                if self.step % LOG_EVERY == 0:
                    bar.set_postfix(loss=f"{float(sums[0] / sums[3]):.3f}",
                                    lr=f"{self.scheduler.get_last_lr()[0]:.2e}", refresh=False)
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    reason = f"--max-steps {cfg.max_steps}"
                elif self.over_budget():
                    reason = f"--time-budget {cfg.time_budget} min"
                if reason:
                    break
            bar.close()
            complete = self.epoch_step >= self.steps_per_epoch
            epoch_label = self.epoch + 1 if complete else round(self.epoch + self.epoch_step / self.steps_per_epoch, 3)
            if complete:
                self.epoch, self.epoch_step = self.epoch + 1, 0
            improved = self.end_of_period(sums, epoch_label, time.monotonic() - epoch_started, complete)
            if complete and self.epoch >= cfg.epochs:
                reason = reason or f"all {cfg.epochs} epochs done"
            if complete and not improved and self.bad_epochs >= cfg.patience:
                reason = reason or f"early stop: no val improvement for {cfg.patience} epochs"
            if reason:
                log.info(f"stopping: {reason}")
                stop = True
        log.info(f"best {cfg.select_on} val MAE {self.best:.3f} at epoch {self.best_epoch}; "
                 f"checkpoints in {self.out}")

    def end_of_period(self, sums: torch.Tensor, epoch_label: float, seconds: float, complete: bool) -> bool:
        """Validate, log a metrics row, checkpoint; returns whether the selection metric improved."""
        cfg, ctx = self.cfg, self.ctx
        sums = distributed.all_reduce_sum(sums, ctx)
        train = (sums[:3] / sums[3].clamp_min(1)).tolist()
        model = self.ema.module if self.ema is not None else self.net
        metrics = validate(model, self.data.val_loaders, self.normalize, ctx, self.autocast)
        key = "val_mae" if cfg.select_on == "combined" else f"val_mae_{cfg.select_on}"
        improved = metrics[key] < self.best
        if improved:
            self.best, self.best_epoch, self.bad_epochs = metrics[key], epoch_label, 0
        elif complete:
            self.bad_epochs += 1
        row = {"epoch": epoch_label, "step": self.step, "lr": self.scheduler.get_last_lr()[0],
               "train_loss": train[0], "train_age_loss": train[1], "train_gender_loss": train[2],
               **{k: round(v, 5) for k, v in metrics.items()}, "seconds": round(seconds, 1)}
        if ctx.is_main:
            append_metrics(self.out, row)
            plot_curves(self.out)
            checkpoint.save(self.state(metrics), self.out / checkpoint.LAST)
            if improved:
                shutil.copyfile(self.out / checkpoint.LAST, self.out / checkpoint.BEST)
            per_set = ", ".join(f"{s} {metrics[f'val_mae_{s}']:.2f}" for s in cfg.sets)
            if f"val_gender_acc_{AFLW}" in metrics:
                per_set += f"; AFLW gender acc {metrics[f'val_gender_acc_{AFLW}']:.4f}"
            self.log.info(f"epoch {epoch_label} step {self.step}: loss {train[0]:.4f} (age {train[1]:.4f}, gender "
                          f"{train[2]:.4f}) | val MAE {metrics['val_mae']:.3f} ({per_set}), gender acc "
                          f"{metrics['val_gender_acc']:.4f}, ±5 {metrics['val_within_5']:.4f}"
                          f"{' *' if improved else ''} | {seconds:.0f}s, "
                          f"{seconds / max(float(sums[3]) / ctx.world_size, 1):.2f}s/step")
        distributed.barrier(ctx)
        return improved


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    argv = sys.argv[1:] if argv is None else argv
    cfg = resolve(argv, checkpoint.saved_config)
    ctx = distributed.setup(cfg.device)
    try:
        trainer = Trainer(cfg, ctx, started, argv)
        trainer.fit()
        if cfg.export and ctx.is_main:
            from .export import export_run

            export_run(Path(cfg.out), which=checkpoint.BEST, set_default=cfg.set_default, log=trainer.log.info)
    finally:
        distributed.cleanup()
