"""The network a training run starts from: built from the run's settings (backbone, layout, normalisation, input
size), initialised from ImageNet (``--init msra|torchvision``) or from another run's checkpoint or an exported
``.safetensors`` model (``--init-from``, which checks that it is the same network). Kept apart from the training
loop in :mod:`train.train`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from agegender.models import NORMALIZATIONS, AgeGenderNet, backbone_spec, net_options

from . import checkpoint
from .init_weights import env_path, initialise
from .netconfig import layout_of, net_kwargs, resolve_layout, resolve_normalization


def build_model(cfg: argparse.Namespace, log: logging.Logger, is_main: bool = True) -> AgeGenderNet:
    """AgeGenderNet from ``cfg``; ``pretrained=None`` means ImageNet weights when the backbone has them.

    ``--init msra|torchvision`` (ResNet-50) loads ImageNet weights from :mod:`train.init_weights` instead, with
    the layout and normalisation those weights were trained under; ``cfg.layout``/``cfg.normalization`` are
    resolved here and saved with the run, so export records them and inference rebuilds the same network."""
    if cfg.init_from and not cfg.resume:  # a fine-tune keeps its parent's network unless told otherwise
        parent = parent_network(cfg.init_from)
        for key in ("layout", "normalization"):
            if getattr(cfg, key) in (None, "auto") and parent.get(key):
                setattr(cfg, key, parent[key])
    cfg.layout = resolve_layout(cfg.backbone, cfg.layout, cfg.init)
    cfg.normalization = resolve_normalization(cfg.normalization, cfg.init)
    kwargs = net_kwargs(vars(cfg))
    if cfg.init != "none":
        if cfg.pretrained and not cfg.resume:
            raise SystemExit("--init and --pretrained both choose ImageNet weights: give one")
        net = AgeGenderNet(cfg.backbone, dropout=cfg.dropout, pretrained=False, **kwargs)
        if not cfg.resume:  # a resumed run restores its own weights
            report = initialise(net, cfg.init, env_path(cfg.init_path))
            log.info(report.summary())
            if is_main:
                (Path(cfg.out) / "init_report.json").write_text(json.dumps(report.as_dict(), indent=1) + "\n")
        cfg.pretrained = True
        return net
    if cfg.pretrained is None and cfg.init_from and not cfg.resume:
        cfg.pretrained = False  # a fine-tune's weights come from its parent (init_from), not from ImageNet
    if cfg.pretrained is None:
        try:
            net = AgeGenderNet(cfg.backbone, dropout=cfg.dropout, pretrained=True, **kwargs)
            cfg.pretrained = True
            return net
        except ValueError as exc:  # the backbone's factory refuses pretrained=True
            log.info(f"{exc}: training from scratch")
            cfg.pretrained = False
    return AgeGenderNet(cfg.backbone, dropout=cfg.dropout, pretrained=cfg.pretrained, **kwargs)


def init_from(net: AgeGenderNet, path: Path, cfg: argparse.Namespace) -> dict[str, Any]:
    """Load ``path``'s weights into ``net`` (the EMA when that run kept one: it is what was validated) and return
    the parent run's lineage for the manifest, so a fine-tuned model's total training stays on record."""
    if path.suffix == ".safetensors":
        return _init_from_export(net, path, cfg)
    state = checkpoint.load(path)
    parent_cfg = state["config"]
    # The input size may change (progressive resizing, as in FixRes / EfficientNetV2): the backbones are fully
    # convolutional with global pooling, so the same weights fit any resolution and only need fine-tuning to it.
    if parent_cfg["backbone"] != cfg.backbone:
        raise SystemExit(f"--init-from: {path} has backbone {parent_cfg['backbone']!r}, this run {cfg.backbone!r}")
    parent_net = net_kwargs(parent_cfg)
    _check_same_network(net, path, parent_net["backbone_options"], parent_net["normalization"])
    net.load_state_dict(checkpoint.validated_weights(state), strict=True)
    return {"checkpoint": str(path), "weights": checkpoint.weights_kind(state),
            "input_size": parent_cfg["input_size"],
            "epochs_completed": checkpoint.epochs_completed(state), "steps": state["step"],
            "wall_time_s": round(state["elapsed"], 1), "hardware": state["hardware"],
            "commands": list(state["commands"]), "val_mae": float(state["metrics"]["val_mae"]),
            "parent": state.get("parent")}


def _init_from_export(net: AgeGenderNet, path: Path, cfg: argparse.Namespace) -> dict[str, Any]:
    """``--init-from weights/agegender_X.safetensors``: continue from an *exported* model — what a session commits
    before it ends, so the next one continues on any machine (``runs/`` is not in the repository). The fp16
    tensors become the fp32 starting point; the lineage comes from the file's manifest entry beside it."""
    from safetensors.torch import load_file

    from agegender.weights import read_manifest

    options = net_options(path)
    meta_backbone = _safetensors_backbone(path)
    if meta_backbone != cfg.backbone:
        raise SystemExit(f"--init-from: {path} holds backbone {meta_backbone!r}, this run {cfg.backbone!r}")
    _check_same_network(net, path, options.get("backbone_options"),
                        options.get("normalization", backbone_spec(cfg.backbone).normalization))
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    try:
        entry = read_manifest(path.parent)["files"].get(path.name, {})
    except Exception:  # a file outside a weights folder: no lineage beyond the file itself
        entry = {}
    training = entry.get("training", {})
    val = entry.get("metrics", {}).get("val", {}).get("combined", {})
    return {"checkpoint": str(path), "weights": f"exported fp16 ({training.get('weights', 'unknown')})",
            "input_size": options.get("input_size"), "epochs_completed": training.get("epochs_completed", 0.0),
            "steps": training.get("steps", 0), "wall_time_s": training.get("wall_time_s", 0.0),
            "hardware": training.get("hardware", "unknown"), "commands": list(training.get("commands", [])),
            "val_mae": float(val.get("mae", float("nan"))), "parent": training.get("initialised_from")}


def _check_same_network(net: AgeGenderNet, path: Path, options: dict | None, normalization: Any) -> None:
    """Weights are only right in the layout and under the normalisation they were trained with."""
    theirs = (layout_of(net.backbone_name, options), normalization)
    ours = (layout_of(net.backbone_name, net.backbone_options), net.normalization)
    if theirs != ours:
        raise SystemExit(f"--init-from: {path} was trained with layout/normalisation {theirs}, this run has {ours}: "
                         "pass the parent's --layout and --normalization")


def _safetensors_backbone(path: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return (fh.metadata() or {}).get("backbone")


def parent_network(path: str) -> dict[str, str | None]:
    """The ``layout`` and ``normalization`` names an ``--init-from`` parent was trained with."""
    if path.endswith(".safetensors"):
        options = net_options(path)
        norm = options.get("normalization")
        return {"layout": options.get("backbone_options", {}).get("layout"),
                "normalization": next((k for k, v in NORMALIZATIONS.items() if v == norm), None)}
    parent = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["config"]
    return {"layout": parent.get("layout"), "normalization": parent.get("normalization")}
