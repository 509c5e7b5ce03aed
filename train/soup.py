"""Weight averaging of fine-tunes that share a parent ("model soup", Wortsman et al. 2022), scored by training's
own validation.

Why: on this 2-core CPU an epoch of ResNet-50 costs 15-60 minutes, and a fine-tune from the bundled file often
trades one validation set for another (session 14: stage 6 improved All-Age-Faces, lost UTKFace). Two fine-tunes
of the same parent lie in one basin of the loss, so the average of their weights is a network of the same size and
speed that often keeps what each gained — measured here in minutes, with no training. Whether it is better is for
validation to say; nothing here touches the test split or the bundled files.

    python -m train.soup --config train/configs/resnet50.yaml --precision bf16 \\
        --ingredients weights/agegender_resnet50.safetensors runs/resnet50_stage6/best.pt --out runs/soup

Each ingredient is loaded as ``--init-from`` would load it (a run's EMA weights, or an exported file), validated,
then their weighted average (``--mix``, default uniform) is validated; ``OUT/soup.json`` records every row.
BatchNorm statistics are averaged like the weights: the ingredients are close, so their statistics are too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch

from . import distributed
from .checkpoint import saved_config
from .config import resolve
from .model_init import init_from
from .train import Trainer
from .validation import validate


def average_weights(states: Sequence[Mapping[str, torch.Tensor]],
                    mix: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """The ``mix``-weighted average (uniform by default; weights are normalised to sum 1) of state dicts with the
    same keys and shapes. Floating tensors are averaged in float32 and cast back; integer buffers (BatchNorm's
    ``num_batches_tracked``) are the first ingredient's, since an average of counts means nothing."""
    if not states:
        raise ValueError("average_weights needs at least one state dict")
    mix = [1.0] * len(states) if mix is None else [float(m) for m in mix]
    if len(mix) != len(states) or min(mix) < 0 or sum(mix) <= 0:
        raise ValueError(f"mix needs {len(states)} non-negative weights with a positive sum, not {mix}")
    mix = [m / sum(mix) for m in mix]
    keys = list(states[0])
    for state in states[1:]:
        if list(state) != keys:
            raise ValueError("the ingredients are not the same network: their tensor names differ")
    soup = {}
    for key in keys:
        first = states[0][key]
        if any(state[key].shape != first.shape for state in states):
            raise ValueError(f"the ingredients are not the same network: {key} has different shapes")
        if not first.is_floating_point():
            soup[key] = first.clone()
            continue
        soup[key] = sum(m * state[key].float() for m, state in zip(mix, states)).to(first.dtype)
    return soup


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(prog="python -m train.soup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ingredients", nargs="+", required=True, type=Path,
                        help="run checkpoints (best.pt) or exported .safetensors of one backbone")
    parser.add_argument("--mix", nargs="+", type=float, default=None, help="weights of the ingredients")
    args, train_argv = parser.parse_known_args(argv)
    # A Trainer for the validation loaders, normalisation and precision the training runs use; its network starts
    # from the first ingredient (layout and normalisation follow it), so no ImageNet weights are loaded first.
    # No optimizer step is taken.
    train_argv = [*train_argv, "--init", "none", "--no-pretrained", "--init-from", str(args.ingredients[0])]
    cfg = resolve(train_argv, saved_config)
    ctx = distributed.setup(cfg.device)
    try:
        trainer = Trainer(cfg, ctx, time.monotonic(), train_argv)
        states = []
        rows: dict[str, dict[str, float]] = {}
        for i, path in enumerate(args.ingredients):
            if i:  # the Trainer already loaded the first one (--init-from above)
                init_from(trainer.net, path, cfg)
            states.append({k: v.detach().clone() for k, v in trainer.net.state_dict().items()})
            rows[str(path)] = validate(trainer.net, trainer.data.val_loaders, trainer.normalize, ctx,
                                       trainer.autocast)
            trainer.log.info(f"{path}: val MAE {rows[str(path)]['val_mae']:.4f}")
        trainer.net.load_state_dict(average_weights(states, args.mix))
        rows["soup"] = validate(trainer.net, trainer.data.val_loaders, trainer.normalize, ctx, trainer.autocast)
        trainer.log.info(f"soup: val MAE {rows['soup']['val_mae']:.4f}")
        if ctx.is_main:
            report = {"ingredients": [str(p) for p in args.ingredients], "mix": args.mix or "uniform",
                      "precision": cfg.precision, "validation": rows}
            (Path(cfg.out) / "soup.json").write_text(json.dumps(report, indent=1) + "\n")
        return rows
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    main()
