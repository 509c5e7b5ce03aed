"""Export a run's checkpoint as the app's bundled model: fp16 safetensors, its ONNX graph (for the onnxruntime
engine, :mod:`train.onnx_export`) and their entries in ``weights/MANIFEST.json``.

    python -m train.export --run runs/efficientnet_lite0 [--which best|last] [--name FILE] [--set-default]
    python -m train.export --onnx-from agegender_efficientnet_lite0.safetensors   # graph of a bundled file

The run folder is git-ignored, so its per-epoch metrics, curves and log are copied to
``reports/train-<backbone>-*`` (committed) and the manifest points there: the app's model report then shows the
training history on any fresh clone. A run started with ``--init-from`` also publishes the history of the run it
started from (``reports/train-<backbone>-init1-*``; ``init2`` for the run that one started from, …), so a
fine-tuned model's whole training stays on record.

The exported tensors are the EMA weights when the run used ``--ema`` (that is what was validated), cast to
float16 (half the size; ResNet-50 stays under the 50 MB limit for bundled files) and checked to load strictly
into ``AgeGenderNet(backbone, dropout=0.0)``, exactly as :class:`agegender.Estimator` builds it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from agegender.models import AgeGenderNet, net_options
from agegender.paths import REPO_DIR, WEIGHTS_DIR
from agegender.weights import load_state_dict, read_manifest, register_file, write_manifest

from . import checkpoint
from .netconfig import network_record

LICENSE = ("Trained on UTKFace (non-commercial research use only) and/or All-Age-Faces (research use): these "
           "weights inherit those terms and are for non-commercial research use only.")


FP16_MAX = float(torch.finfo(torch.float16).max)  # 65504


def fits_fp16(tensor: torch.Tensor) -> bool:
    """Whether every value of ``tensor`` survives float16 storage as a finite number."""
    return bool(tensor.numel() == 0 or tensor.detach().abs().max().item() <= FP16_MAX)


def to_fp16(tensors: dict[str, torch.Tensor], backbone: str, input_size: int) -> dict[str, torch.Tensor]:
    """Float tensors as contiguous fp16 (integer buffers kept), after a strict load into the inference model.

    A tensor float16 cannot hold stays float32: ResNet-50's stem BatchNorm sees Caffe's 0-255 input, and one of
    its running variances is ~74,000, past float16's 65,504; stored as fp16 it became inf and silently zeroed
    that channel at inference (and made every later validation of a run started from the file NaN)."""
    AgeGenderNet(backbone, dropout=0.0, input_size=input_size).load_state_dict(tensors, strict=True)
    return {k: (v.half() if v.is_floating_point() and fits_fp16(v) else v).contiguous() for k, v in tensors.items()}


def manifest_entry(state: dict[str, Any], source: str) -> dict[str, Any]:
    """Everything needed to use, trust and reproduce the weights; metrics nest under "val" so that the
    evaluation tool can add "test" beside them."""
    cfg = state["config"]
    init = provenance(cfg, state.get("parent"))
    return {
        "kind": "agegender",
        "backbone": cfg["backbone"],
        **network_record(cfg),  # input_size, backbone_options (layout), normalization, mean/std
        "dtype": "float16",
        "description": f"AgeGenderNet {cfg['backbone']} ({init}) at {cfg['input_size']} px: 101-bin age "
                       f"distribution and P(female), trained on {' + '.join(cfg['sets'])}",
        "license": LICENSE,
        "training_data": {
            "sets": state["data"],
            "crops": "train.preprocess cache (detector + calibrated crop, context 1.25); training augments around "
                     "the inference crop, validation uses it exactly",
        },
        "training": {
            "epochs_completed": checkpoint.epochs_completed(state),
            "selected_epoch": state["best_epoch"],
            "steps": state["step"],
            "wall_time_s": round(state["elapsed"], 1),
            "hardware": state["hardware"],
            "commands": state["commands"],
            "checkpoint": source,
            "weights": checkpoint.weights_kind(state),
            "config": {k: v for k, v in state["config"].items() if k not in ("resume", "export", "set_default")},
            **({"initialised_from": state["parent"]} if state.get("parent") else {}),
        },
        "metrics": {"val": val_metrics(state["metrics"], state["data"])},
    }


def provenance(cfg: dict[str, Any], parent: dict[str, Any] | None) -> str:
    """Where the weights started, for the manifest's description. A fine-tune names its parent (whose own
    start is recorded under ``training.initialised_from``); ``--init msra``/``torchvision`` loads ImageNet
    weights into a network built without package weights (``pretrained`` false), so it is not "from scratch"."""
    if parent:
        return f"fine-tuned from {parent.get('checkpoint', 'a parent run')}, lineage in training.initialised_from"
    if cfg.get("init") in ("msra", "torchvision"):
        return f"ImageNet-initialised, {cfg['init']} weights"
    return "ImageNet-initialised" if cfg.get("pretrained") else "trained from scratch"


def val_metrics(flat: dict[str, float], data: dict[str, dict]) -> dict[str, dict[str, float]]:
    """``{"utkface": {"mae", "gender_acc", "n"}, …, "combined": {…}}`` from the run's flat ``val_*`` metrics."""
    out = {}
    for name in [*data, "combined"]:
        suffix = "" if name == "combined" else f"_{name}"
        n = sum(d["val_crops"] for d in data.values()) if name == "combined" else data[name]["val_crops"]
        out[name] = {"mae": round(flat[f"val_mae{suffix}"], 4), "gender_acc": round(flat[f"val_gender_acc{suffix}"], 4),
                     "n": n}
        if f"val_within_5{suffix}" in flat:  # runs before this metric existed lack it
            out[name]["within_5"] = round(flat[f"val_within_5{suffix}"], 4)
    return out


HISTORY_FILES = {"metrics_csv": ("metrics.csv", "-metrics.csv"), "curves": ("curves.png", "-curves.png"),
                 "log": ("train.log", ".log")}


def _as_recorded(path: Path) -> str:
    """A path as the manifest records it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO_DIR)) if resolved.is_relative_to(REPO_DIR) else str(resolved)


def publish_history(run: Path, backbone: str, reports_dir: Path, stage: str = "") -> dict[str, str]:
    """Copy the run's metrics.csv, curves.png and train.log to ``reports_dir/train-<backbone><stage>*``; returns
    the manifest keys → paths (relative to the repository when inside it) of the files that existed."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, (source, suffix) in HISTORY_FILES.items():
        if (run / source).is_file():
            target = reports_dir / f"train-{backbone}{stage}{suffix}"
            shutil.copyfile(run / source, target)
            out[key] = _as_recorded(target)
    return out


def bundled_histories(manifest: dict[str, Any]) -> dict[str, list[dict[str, bytes]]]:
    """For each bundled file, the bytes of the training history files its manifest entry names, stage by stage
    (its own run, then the run it started from, ...). Read before publishing: a fine-tune of a *bundled* file
    (``--init-from weights/...safetensors``) has no run folder to copy its parent's history from, and publishing
    its own history overwrites the very files (``train-<backbone>-*``) that held it."""
    out: dict[str, list[dict[str, bytes]]] = {}
    for name, entry in manifest.get("files", {}).items():
        stages, record = [], entry.get("training")
        while record:
            files = {}
            for key in HISTORY_FILES:
                path = Path(record[key]) if record.get(key) else None
                path = path if path is None or path.is_absolute() else REPO_DIR / path
                if path is not None and path.is_file():
                    files[key] = path.read_bytes()
            stages.append(files)
            record = record.get("initialised_from")
        out[name] = stages
    return out


def write_history(files: dict[str, bytes], backbone: str, reports_dir: Path, stage: str) -> dict[str, str]:
    """:func:`publish_history` for history files held in memory (:func:`bundled_histories`)."""
    out = {}
    for key, data in files.items():
        target = reports_dir / f"train-{backbone}{stage}{HISTORY_FILES[key][1]}"
        target.write_bytes(data)
        out[key] = _as_recorded(target)
    return out


def export_run(run: Path, which: str = checkpoint.BEST, name: str | None = None,
               weights_dir: Path | None = None, set_default: bool = False,
               log: Callable[[str], None] = print, reports_dir: Path | None = None, onnx: bool = True) -> Path:
    """Write ``weights_dir/name`` (default ``agegender_{backbone}.safetensors``) and register it in the manifest.

    Any other manifest entry for the same backbone is dropped (its file is left alone): ``Estimator(model=...)``
    takes the first entry it finds for a backbone, and that must be this one. With ``reports_dir`` the run's
    training history is published there (:func:`publish_history`). With ``onnx`` (default) the ONNX graph of the
    exported weights is written and registered too (:func:`export_onnx`)."""
    weights_dir = Path(weights_dir or WEIGHTS_DIR)
    carried = bundled_histories(read_manifest(weights_dir)) if reports_dir is not None else {}
    state = checkpoint.load(run / which)
    cfg = state["config"]
    backbone, input_size = cfg["backbone"], cfg["input_size"]
    name = name or f"agegender_{backbone}.safetensors"
    tensors = to_fp16(checkpoint.validated_weights(state), backbone, input_size)
    path = weights_dir / name
    save_file(tensors, str(path), metadata={
        "format": "agegender", "backbone": backbone,
        **{k: (str(v) if k == "input_size" else json.dumps(v)) for k, v in network_record(cfg).items()},
    })
    path.chmod(0o644)  # safetensors creates it owner-only; the app may run as another user
    manifest = read_manifest(weights_dir)
    stale = [n for n, e in manifest["files"].items()
             if n != name and e.get("kind") == "agegender" and e.get("backbone") == backbone]
    if stale:
        for n in stale:
            del manifest["files"][n]
            log(f"manifest: dropped the entry of {n} (same backbone; file left in place)")
        write_manifest(manifest, weights_dir)
    info = manifest_entry(state, f"{run.name}/{which}")
    if reports_dir is not None:
        info["training"].update(publish_history(run, backbone, Path(reports_dir)))
        parent, depth, inherited = info["training"].get("initialised_from"), 1, []
        while parent:  # a fine-tune: keep the history of the runs it started from beside its own
            stage = f"-init{depth}"
            published = publish_history(Path(parent["checkpoint"]).parent, backbone, Path(reports_dir), stage)
            if not published:  # an exported file, no run folder: the history its manifest entry had
                inherited = inherited or list(carried.get(Path(parent["checkpoint"]).name, []))
                published = write_history(inherited.pop(0), backbone, Path(reports_dir), stage) if inherited else {}
            parent.update(published)
            parent, depth = parent.get("parent"), depth + 1
    entry = register_file(name, info, weights_dir)
    if set_default:
        manifest = read_manifest(weights_dir)
        manifest["default_model"] = backbone
        write_manifest(manifest, weights_dir)
    log(f"exported {run / which} -> {path} ({entry['bytes'] / 1e6:.1f} MB, "
        f"val MAE {state['metrics']['val_mae']:.3f}){', now the default model' if set_default else ''}")
    if onnx:
        export_onnx(name, weights_dir, log)
    return path


def export_onnx(name: str, weights_dir: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Write the ONNX graph of bundled safetensors file ``name`` beside it and register it in the manifest.

    The entry records the source file and its sha256 (a graph is only used with the weights it came from), the
    opset and the largest difference from the torch engine's probabilities on check crops."""
    from .onnx_export import OPSET, check_crops, max_probability_difference, write_onnx

    weights_dir = Path(weights_dir or WEIGHTS_DIR)
    source = read_manifest(weights_dir)["files"][name]
    net = AgeGenderNet(source["backbone"], dropout=0.0, **net_options(source))  # layout, normalisation as recorded
    net.load_state_dict(load_state_dict(name, weights_dir), strict=True)
    onnx_name = f"{Path(name).stem}.onnx"
    path = write_onnx(net, weights_dir / onnx_name)
    diff = max_probability_difference(net, path.read_bytes(), check_crops(net.input_size))
    entry = register_file(onnx_name, {
        "kind": "agegender-onnx", "backbone": source["backbone"], "source": name,
        "source_sha256": source["sha256"], "input_size": int(source["input_size"]), "opset": OPSET,
        "precision": "float32", "weights_storage": "float16 (the source's precision; a tensor float16 can not hold stays float32), cast to "
                            "float32 on load",
        "input": "crops: uint8 (batch, S, S, 3) RGB; normalisation is inside the graph",
        "outputs": ["age_probs: float32 (batch, 101)", "p_female: float32 (batch,)"],
        "max_abs_diff_vs_torch": float(f"{diff:.3g}"),
        "description": f"ONNX graph of {name} for the onnxruntime engine",
        "license": source.get("license", LICENSE),
    }, weights_dir)
    log(f"exported {name} -> {path} ({entry['bytes'] / 1e6:.1f} MB, max |Δp| vs torch {diff:.2g})")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="run folder of python -m train (--out)")
    parser.add_argument("--onnx-from", metavar="FILE", help="only write the ONNX graph of this bundled .safetensors")
    parser.add_argument("--which", choices=("best", "last"), default="best")
    parser.add_argument("--name", default=None, help="file name in the weights folder")
    parser.add_argument("--weights-dir", type=Path, default=None, help=f"default {WEIGHTS_DIR}")
    parser.add_argument("--set-default", action="store_true", help="make this backbone the app's default model")
    parser.add_argument("--reports", type=Path, default=None,
                        help="where the run's metrics.csv/curves.png/train.log are published (default: reports/ for "
                        "the repository's weights/, else reports/ inside the weights folder)")
    args = parser.parse_args(argv)
    if args.onnx_from:
        export_onnx(args.onnx_from, args.weights_dir)
        return
    if args.run is None:
        parser.error("--run (or --onnx-from) is required")
    export_run(args.run, f"{args.which}.pt", args.name, args.weights_dir, args.set_default,
               reports_dir=args.reports or history_dir(args.weights_dir))


def history_dir(weights_dir: Path | None) -> Path:
    """Where an export publishes training histories by default. Why not always ``reports/``: a candidate exported
    into a copy of ``weights/`` to be scored (docs/wild-photos.md) would rewrite the committed history of the
    bundled model (and shift its ``-initN`` files) before anything was chosen; its history belongs beside it."""
    folder = Path(weights_dir or WEIGHTS_DIR)  # WEIGHTS_DIR follows AGEGENDER_WEIGHTS
    return REPO_DIR / "reports" if folder.resolve() == (REPO_DIR / "weights").resolve() else folder / "reports"


if __name__ == "__main__":
    main()
