"""Command-line options of ``python -m train`` and how they combine with a YAML file and a resumed run.

Precedence, lowest first: built-in defaults < ``--config`` YAML < the config saved in ``last.pt`` (``--resume``)
< options given explicitly on the command line. So ``--resume --max-steps 2000`` or ``--resume --time-budget 90``
changes only what it names and the rest of the run stays as it was started.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import yaml

from agegender.evaluation.datasets import SETS
from agegender.models import NORMALIZATIONS, list_backbones
from agegender.models.resnet import LAYOUTS

from .augment import AUGMENT_POLICIES
from .init_weights import INIT_SOURCES
from .preprocess import DEFAULT_CACHE

ARCHITECTURE_KEYS = ("backbone", "input_size", "layout", "normalization")  # cannot change when resuming
_UNSET = object()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train", description="Train AgeGenderNet on the crop cache of `python -m train.preprocess`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=str, default=None, help="YAML file of option values (keys as below, with _)")
    data = p.add_argument_group("data")
    data.add_argument("--cache", type=str, default=str(DEFAULT_CACHE), help="crop cache of train.preprocess")
    data.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="train on these sets' train splits")
    data.add_argument("--select-on", default="combined",
                      help="val MAE used for best.pt and early stopping: 'combined' or one of --sets")
    data.add_argument("--limit-train", type=int, default=None, help="random N crops of each set's train split")
    data.add_argument("--limit-val", type=int, default=None, help="random N crops of each set's val split")
    data.add_argument("--workers", type=int, default=2, help="DataLoader worker processes per rank")
    data.add_argument("--aflw-val", action=argparse.BooleanOptionalAction, default=False,
                      help="also validate gender on MTFL/AFLW faces in the wild (cache: python -m train.aflw); "
                           "reported as val_gender_acc_mtfl_aflw, never part of the selection MAE")
    data.add_argument("--aflw-train", action=argparse.BooleanOptionalAction, default=False,
                      help="add the AFLW train split to training with gender labels only (age loss masked)")
    data.add_argument("--augment", choices=AUGMENT_POLICIES, default="standard",
                      help="'strong' adds low light, motion/defocus blur, down-scaling, grain, sepia and more "
                           "grayscale to the standard policy; 'wild' adds the degraded-validation generator "
                           "(agegender.evaluation.degrade) with --degrade-probability (train/augment.py)")
    data.add_argument("--degrade-probability", type=float, default=0.5, metavar="P",
                      help="share of training crops degraded by the wild policy")
    model = p.add_argument_group("model")
    model.add_argument("--backbone", choices=list_backbones(), default="efficientnet_lite0", help="architecture")
    model.add_argument("--input-size", type=int, default=None, help="default: the backbone's (registry)")
    model.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                       help="start from ImageNet weights; default: when the backbone has them")
    model.add_argument("--init-from", type=str, default=None, metavar="CHECKPOINT",
                       help="start from this run checkpoint's weights (its EMA if it kept one) with a fresh "
                            "optimizer and schedule: fine-tuning; same backbone, any input size")
    model.add_argument("--init", choices=INIT_SOURCES, default="none",
                       help="ResNet-50 ImageNet initialisation: msra (the shared MSRA tensors, v1 layout) or "
                            "torchvision (its IMAGENET1K_V2 state dict: --init-path FILE.pth, else downloaded); "
                            "dlib_resnet29: dlib (face recognition, CC0; train/init_dlib.py)")
    model.add_argument("--init-path", type=str, default=None,
                       help="msra: the tensor folder (default $AGEGENDER_DATA/../models/resnet50_imagenet_msra); "
                            "torchvision: a .pth state dict (default: torch.hub download); dlib: the face-api "
                            "npm tarball (default .cache/face-api/vladmandic-face-api-1.7.15.tgz)")
    model.add_argument("--layout", choices=("auto", *LAYOUTS), default="auto",
                       help="ResNet-50 stride placement; auto: v1 with --init msra, else v1.5 (torchvision)")
    model.add_argument("--normalization", choices=("auto", *NORMALIZATIONS), default="auto",
                       help="pixel normalisation; auto: what the initial weights expect (recorded in the manifest)")
    model.add_argument("--dropout", type=float, default=0.2, help="before both heads")
    loss = p.add_argument_group("loss")
    loss.add_argument("--age-loss", choices=("gaussian", "onehot"), default="gaussian",
                      help="age target: Gaussian label distribution or the one-hot bin")
    loss.add_argument("--age-sigma", type=float, default=2.5, help="std (years) of the Gaussian age target")
    loss.add_argument("--age-l1", type=float, default=0.0, metavar="WEIGHT",
                      help="add WEIGHT x |expected age - label| (years) to the age loss; 0 = off")
    loss.add_argument("--gender-smoothing", type=float, default=0.05, help="label smoothing of the gender BCE")
    loss.add_argument("--gender-weight", type=float, default=1.0, help="loss = age + this × gender")
    loss.add_argument("--balance", action=argparse.BooleanOptionalAction, default=False,
                      help="weight samples by inverse frequency of their age decade")
    loss.add_argument("--balance-scope", choices=("all", "degraded"), default="all",
                      help="which samples --balance weighs: all, or only those the wild policy degraded (a flatter "
                           "age prior where the picture says little, the natural one on clean faces)")
    loss.add_argument("--distill-weight", type=float, default=0.0, metavar="WEIGHT",
                      help="add WEIGHT x CE(bundled Lite0's TTA age distribution, prediction) to the age loss; "
                           "targets from python -m train.distill; 0 = off")
    loss.add_argument("--distill-gender-weight", type=float, default=0.0, metavar="WEIGHT",
                      help="add WEIGHT x BCE(the Lite0's TTA P(female), prediction) to the gender loss "
                           "(python -m train.distill, column 101); 0 = off")
    loss.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="mixup Beta(α, α); 0 = off")
    optim = p.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=30, help="length of the LR schedule")
    optim.add_argument("--batch-size", type=int, default=64, help="per process (global = this × world size)")
    optim.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    optim.add_argument("--weight-decay", type=float, default=0.05, help="not applied to biases and norms")
    optim.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up, then cosine (per step)")
    optim.add_argument("--lr-mult", nargs="*", default=[], metavar="PART=FACTOR",
                       help="learning-rate factor per part: stem, layer1 … layer4, heads, or any parameter-name "
                            "prefix (backbone.layer3.5); the longest match wins, unmatched parts get 1")
    optim.add_argument("--freeze", nargs="*", default=[], metavar="PART",
                       help="parts (as --lr-mult) frozen, with their BatchNorm statistics, for --freeze-epochs")
    optim.add_argument("--freeze-epochs", type=float, default=0.0, help="how long --freeze lasts")
    optim.add_argument("--min-lr-ratio", type=float, default=0.01, help="final LR as a fraction of --lr")
    optim.add_argument("--ema", type=float, default=0.0, metavar="DECAY", help="EMA of weights; 0 = off")
    optim.add_argument("--patience", type=int, default=8, help="epochs without val improvement before stopping")
    optim.add_argument("--seed", type=int, default=0, help="init, data order, augmentation, dropout, mixup")
    run = p.add_argument_group("run")
    run.add_argument("--out", type=str, default=None, help="run folder; default runs/BACKBONE")
    run.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda")
    run.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                     help="autocast dtype; auto = bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU")
    run.add_argument("--compile", action="store_true", help="torch.compile the model")
    run.add_argument("--max-steps", type=int, default=None, help="stop after this global step (smoke runs)")
    run.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                     help="stop (validate, checkpoint) at the first step this long after start; --resume goes on")
    run.add_argument("--export", action="store_true", help="export best.pt to weights/ when training ends")
    run.add_argument("--set-default", action="store_true", help="with --export: make it the app's default model")
    return p


def parse_lr_mult(value: dict[str, float] | list[str] | None) -> dict[str, float]:
    """``["layer1=0.1", …]`` (command line) or ``{layer1: 0.1}`` (YAML) → ``{"layer1": 0.1}``."""
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    out = {}
    for item in value or []:
        part, sep, factor = item.partition("=")
        try:
            out[part] = float(factor)
        except ValueError:
            raise SystemExit(f"--lr-mult {item!r}: expected PART=FACTOR, e.g. layer1=0.1") from None
        if not sep or not part or out[part] < 0:
            raise SystemExit(f"--lr-mult {item!r}: expected PART=FACTOR with FACTOR >= 0")
    return out


def _yaml_values(path: str, known: set[str]) -> dict[str, Any]:
    values = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(values) - known
    if unknown:
        raise SystemExit(f"{path}: unknown option(s) {', '.join(sorted(unknown))}")
    return values


def resolve(argv: list[str] | None,
            saved: Callable[[str], dict[str, Any] | None] | None = None) -> argparse.Namespace:
    """Parse ``argv`` into the run's config. ``saved(out_dir)`` returns the config stored in a run's ``last.pt``
    (or ``None``); it is consulted with ``--resume``."""
    parser = build_parser()
    defaults = vars(parser.parse_args([]))
    explicit = {k: v for k, v in vars(parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(defaults, _UNSET))))
                .items() if v is not _UNSET}
    config = dict(defaults)
    if explicit.get("config"):
        config.update(_yaml_values(explicit["config"], set(defaults)))
    config.update(explicit)
    config["out"] = config["out"] or f"runs/{config['backbone']}"
    if config["resume"] and saved is not None:
        stored = saved(config["out"])
        if stored is not None:
            for key in ARCHITECTURE_KEYS:
                if key in explicit and explicit[key] != stored.get(key, explicit[key]):
                    raise SystemExit(f"--resume: {key} is {stored[key]!r} in {config['out']}, not {explicit[key]!r}")
            config = {**config, **{k: v for k, v in stored.items() if k in defaults}, **explicit, "resume": True}
    config["lr_mult"] = parse_lr_mult(config["lr_mult"])
    if config["select_on"] != "combined" and config["select_on"] not in config["sets"]:
        raise SystemExit(f"--select-on must be 'combined' or one of {config['sets']}")
    return argparse.Namespace(**config)
