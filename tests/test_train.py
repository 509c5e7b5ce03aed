"""The training package on real crops: it learns, resumes exactly, runs under 2-process DDP, and exports weights
the app loads. A tiny crop cache (64 UTKFace train + 64 val images) is built once with ``train.preprocess``.

Runs use EfficientNet-Lite0 without ImageNet weights (nothing here is about pretraining) on the CPU.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from agegender.models import AgeGenderNet
from agegender.paths import REPO_DIR, WEIGHTS_DIR, data_root
from agegender.weights import MAX_FILE_BYTES
from train import checkpoint
from train.augment import augment, eval_transform
from train.config import resolve
from train.data import load_split
from train.distributed import Dist
from train.export import export_run, provenance, to_fp16
from train.losses import AgeGenderLoss, decade_weights
from train.train import Trainer, main
from conftest import torchrun_train  # noqa: E402

N_IMAGES = 64
# Small and fast: 16-image batches, so 4 steps per epoch over the 64 crops; augmentation in the main process
# except where worker processes are the point (each spawned worker costs seconds of imports).
BASE = ["--sets", "utkface", "--backbone", "efficientnet_lite0", "--no-pretrained", "--batch-size", "16",
        "--workers", "0", "--seed", "0"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_DIR), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    images = data_root() / "utkface" / "images"
    if not images.is_dir():
        pytest.skip(f"needs UTKFace under {images} (set AGEGENDER_DATA to the folder holding utkface/)")
    out = tmp_path_factory.mktemp("crops")
    subprocess.run([sys.executable, "-m", "train.preprocess", "--limit", str(N_IMAGES), "--cache", str(out),
                    "--sets", "utkface", "--splits", "train", "val", "--workers", "1"],
                   cwd=REPO_DIR, env=_env(), check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def trained_run(cache, tmp_path_factory) -> Path:
    """8 epochs (32 steps) over the 64 crops: enough to see learning, and a checkpoint for the export test."""
    out = tmp_path_factory.mktemp("run") / "lite0"
    main(BASE + ["--cache", str(cache), "--out", str(out), "--epochs", "8", "--lr", "3e-3", "--warmup-epochs", "1",
                 "--ema", "0.9", "--workers", "1"])
    return out


def _metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _center_crops(cache: Path, n: int = 16) -> np.ndarray:
    crops = np.load(cache / "utkface_val.npy")[:n]
    side = crops.shape[1]
    transform = eval_transform(side, 1.25, 128)
    return np.stack([augment(transform, c) for c in crops])


@pytest.mark.data
def test_training_lowers_the_loss(trained_run):
    rows = _metrics(trained_run)
    assert [float(r["epoch"]) for r in rows] == list(range(1, 9))
    losses = [float(r["train_loss"]) for r in rows]
    first, last = np.mean(losses[:2]), np.mean(losses[-2:])
    assert last < first - 0.3, f"training loss did not drop: {losses}"
    assert (trained_run / "curves.png").stat().st_size > 0
    assert (trained_run / "best.pt").is_file() and (trained_run / "train.log").is_file()


@pytest.mark.data
def test_checkpoint_is_weights_only(trained_run):
    state = torch.load(trained_run / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 32 and state["epoch"] == 8 and state["epoch_step"] == 0
    assert state["ema"] is not None and state["config"]["backbone"] == "efficientnet_lite0"
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}


@pytest.mark.data
def test_resume_continues_exactly(cache, tmp_path):
    """6 steps straight == 3 steps, stop, resume for 3 more (same step, optimizer state, and weights)."""
    common = BASE + ["--cache", str(cache), "--epochs", "3", "--lr", "2e-3"]
    main(common + ["--out", str(tmp_path / "straight"), "--max-steps", "6", "--workers", "2"])
    main(common + ["--out", str(tmp_path / "split"), "--max-steps", "3"])
    saved = checkpoint.load(tmp_path / "split" / "last.pt")
    assert saved["step"] == 3 and saved["epoch"] == 0 and saved["epoch_step"] == 3  # stopped mid-epoch

    # Resumed in-process, without workers: per-sample augmentation seeds make the worker count irrelevant.
    argv = ["--out", str(tmp_path / "split"), "--resume", "--max-steps", "6", "--workers", "0"]
    cfg = resolve(argv, checkpoint.saved_config)
    assert cfg.lr == 2e-3 and cfg.workers == 0 and cfg.max_steps == 6  # saved config, explicit flags on top
    trainer = Trainer(cfg, Dist(), time.monotonic(), argv)
    assert trainer.step == 3 and trainer.epoch_step == 3
    restored = trainer.optimizer.state_dict()
    assert restored["param_groups"][0]["lr"] == saved["optimizer"]["param_groups"][0]["lr"]
    for key, value in saved["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(restored["state"][key][name], tensor), (key, name)
    assert trainer.scheduler.state_dict()["last_epoch"] == 3
    trainer.fit()

    straight = checkpoint.load(tmp_path / "straight" / "last.pt")
    resumed = checkpoint.load(tmp_path / "split" / "last.pt")
    assert resumed["step"] == straight["step"] == 6
    for name, tensor in straight["model"].items():
        assert torch.allclose(resumed["model"][name].float(), tensor.float(), atol=1e-5, rtol=1e-4), name
    assert len(resumed["commands"]) == 2
    rows = _metrics(tmp_path / "split")
    assert [r["step"] for r in rows] == ["3", "4", "6"]  # mid-epoch stop, end of epoch 1, final stop


@pytest.mark.data
def test_time_budget_stops_with_a_checkpoint(cache, tmp_path):
    main(BASE + ["--cache", str(cache), "--out", str(tmp_path / "budget"), "--time-budget", "0.0001"])
    state = checkpoint.load(tmp_path / "budget" / "last.pt")
    assert state["step"] == 1 and state["epoch_step"] == 1
    assert "stopping: --time-budget" in (tmp_path / "budget" / "train.log").read_text()


@pytest.mark.data
def test_ddp_two_processes_gloo(cache, tmp_path):
    out = tmp_path / "ddp"
    cmd = torchrun_train(*BASE, "--cache", str(cache), "--out", str(out), "--max-steps", "2", "--limit-val", "40",
                         "--ema", "0.9")
    proc = subprocess.run(cmd, cwd=REPO_DIR, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "curves.png", "last.pt", "metrics.csv", "train.log"]
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch,step,")  # one header, one row: rank 0 alone writes
    assert (out / "train.log").read_text().count("training crops") == 1
    state = checkpoint.load(out / "last.pt")
    assert state["world_size"] == 2 and state["step"] == 2

    # The all-reduced, sharded validation equals validating the saved EMA model on the full val set in one go.
    net = AgeGenderNet("efficientnet_lite0", dropout=0.0)
    net.load_state_dict(state["ema"]["module"])
    crops = np.load(cache / "utkface_val.npy")
    assert state["data"]["utkface"]["val_crops"] == 40
    split = load_split(cache, "utkface", "val", limit=40, seed=0)
    x = torch.from_numpy(np.stack([augment(eval_transform(160, 1.25, 128), crops[r]) for r in split.rows]))
    mean, std = torch.tensor(net.mean).view(1, 3, 1, 1) * 255, torch.tensor(net.std).view(1, 3, 1, 1) * 255
    with torch.inference_mode():
        age_logits, gender_logit = net.eval()(((x.permute(0, 3, 1, 2).float() - mean) / std))
    expected = torch.softmax(age_logits, 1) @ torch.arange(101.0)
    mae = (expected - torch.from_numpy(split.ages).float()).abs().mean().item()
    assert state["metrics"]["val_mae"] == pytest.approx(mae, abs=1e-3)


@pytest.mark.data
def test_export_loads_in_the_app(trained_run, cache, tmp_path):
    from agegender import Estimator

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(WEIGHTS_DIR / "MANIFEST.json", weights)
    for detector in WEIGHTS_DIR.glob("*.tflite"):
        shutil.copy(detector, weights)
    reports = tmp_path / "reports"
    path = export_run(trained_run, "best.pt", weights_dir=weights, set_default=True, log=lambda _: None,
                      reports_dir=reports)
    assert path.name == "agegender_efficientnet_lite0.safetensors"
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
        assert fh.get_tensor("age_head.weight").dtype == torch.float16
    assert meta["backbone"] == "efficientnet_lite0" and meta["input_size"] == "128"
    assert json.loads(meta["mean"]) == list(AgeGenderNet("efficientnet_lite0").mean)

    manifest = json.loads((weights / "MANIFEST.json").read_text())
    entry = manifest["files"][path.name]
    assert manifest["default_model"] == "efficientnet_lite0"
    assert entry["kind"] == "agegender" and entry["training"]["steps"] == 32
    assert entry["training_data"]["sets"]["utkface"]["train_crops"] == N_IMAGES
    assert "non-commercial" in entry["license"]
    assert set(entry["metrics"]["val"]) == {"utkface", "combined"}
    history = entry["training"]["metrics_csv"]
    assert history == str(reports / "train-efficientnet_lite0-metrics.csv")
    assert (reports / "train-efficientnet_lite0.log").is_file() and entry["training"]["log"].endswith(".log")
    assert Path(history).read_text() == (trained_run / "metrics.csv").read_text()

    # flip_tta=False: compared below with one plain forward pass of the checkpoint.
    from_file = Estimator(model="efficientnet_lite0", weights=path, weights_dir=weights, flip_tta=False)
    from_manifest = Estimator(weights_dir=weights, flip_tta=False)  # the default model, through the manifest
    assert from_manifest.model_name == "efficientnet_lite0" and from_manifest.trained
    assert from_manifest.weights_info["file"] == path.name
    # The export wrote the ONNX graph of the same weights; the app runs it (engine "auto").
    graph = manifest["files"]["agegender_efficientnet_lite0.onnx"]
    assert graph["kind"] == "agegender-onnx" and graph["source_sha256"] == entry["sha256"]
    assert graph["max_abs_diff_vs_torch"] <= 1e-4
    assert from_manifest.engine_name == "onnx" and from_file.engine_name == "torch"

    # fp16 weights predict like the fp32 (EMA) checkpoint they came from.
    crops = _center_crops(cache)
    reference = AgeGenderNet("efficientnet_lite0", dropout=0.0)
    reference.load_state_dict(checkpoint.load(trained_run / "best.pt")["ema"]["module"])
    mean, std = torch.tensor(reference.mean).view(1, 3, 1, 1) * 255, torch.tensor(reference.std).view(1, 3, 1, 1) * 255
    with torch.inference_mode():
        age_logits, gender_logit = reference.eval()((torch.from_numpy(crops).permute(0, 3, 1, 2).float() - mean) / std)
    ref_age = (torch.softmax(age_logits, 1) @ torch.arange(101.0)).numpy()
    ref_female = torch.sigmoid(gender_logit).numpy()
    for est in (from_file, from_manifest):
        probs, p_female = est.predict_batch(crops)
        assert np.abs(probs @ np.arange(101) - ref_age).max() < 0.25
        assert np.abs(p_female - ref_female).max() < 0.01
        est.close()


def test_a_candidate_export_leaves_the_committed_history_alone(trained_run, tmp_path):
    """``python -m train.export --run R --weights-dir COPY`` (how candidates are scored) publishes the run's
    history inside COPY; only an export into the bundled folder writes ``reports/``."""
    from train import export

    committed = {p: p.read_bytes() for p in (REPO_DIR / "reports").glob("train-*")}
    weights = tmp_path / "candidate"
    weights.mkdir()
    shutil.copy(WEIGHTS_DIR / "MANIFEST.json", weights)
    export.main(["--run", str(trained_run), "--weights-dir", str(weights)])
    entry = json.loads((weights / "MANIFEST.json").read_text())["files"]["agegender_efficientnet_lite0.safetensors"]
    assert Path(entry["training"]["metrics_csv"]) == weights / "reports" / "train-efficientnet_lite0-metrics.csv"
    assert (weights / "reports" / "train-efficientnet_lite0.log").is_file()
    assert {p: p.read_bytes() for p in (REPO_DIR / "reports").glob("train-*")} == committed
    assert export.history_dir(REPO_DIR / "weights") == REPO_DIR / "reports"
    assert export.history_dir(weights) == weights / "reports"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_resnet50_fp16_fits_the_bundle_limit(tmp_path):
    tensors = to_fp16(AgeGenderNet("resnet50", dropout=0.0).state_dict(), "resnet50", 128)
    save_file(tensors, str(tmp_path / "r50.safetensors"))
    size = (tmp_path / "r50.safetensors").stat().st_size
    assert 40e6 < size <= MAX_FILE_BYTES


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_statistic_past_the_fp16_range_survives_export():
    """The MSRA stem's BatchNorm sees 0-255 input: a running variance of ~74,000 (past float16's 65,504) became inf
    in the fp16 file and zeroed its channel. It stays float32 in the safetensors file and in the ONNX graph."""
    import onnxruntime as ort

    from train.onnx_export import export_onnx_bytes

    net = AgeGenderNet("efficientnet_lite0", dropout=0.0, input_size=64).eval()
    name = next(k for k in net.state_dict() if k.endswith("running_var"))
    state = net.state_dict()
    state[name][0] = 73972.5
    tensors = to_fp16(state, "efficientnet_lite0", 64)
    assert tensors[name].dtype == torch.float32 and tensors[name][0].item() == 73972.5
    assert tensors["age_head.weight"].dtype == torch.float16  # everything else still half the size
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    import onnx
    from onnx import numpy_helper

    graph = export_onnx_bytes(net)
    stored = [numpy_helper.to_array(i) for i in onnx.load_from_string(graph).graph.initializer]
    assert all(np.isfinite(v).all() for v in stored if v.dtype.kind == "f")
    assert any(v.dtype == np.float32 and np.isclose(v, 73972.5).any() for v in stored)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    crops = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    probs, _ = session.run(None, {"crops": crops})
    assert np.isfinite(probs).all()
    with torch.inference_mode():
        from agegender.models.probabilities import ProbabilityModel

        ref = ProbabilityModel(net).eval()(torch.from_numpy(crops))[0].numpy()
    assert np.abs(probs - ref).max() < 1e-3


def test_loss_targets_and_balance():
    loss = AgeGenderLoss(age_sigma=2.5)
    ages = torch.tensor([0, 30, 100, 116])
    target, gender, weight = loss.targets(ages, torch.tensor([0, 1, 0, 1]))
    assert torch.allclose(target.sum(1), torch.ones(4))
    assert target.argmax(1).tolist() == [0, 30, 100, 100]
    assert gender.tolist() == pytest.approx([0.025, 0.975, 0.025, 0.975])
    weights = decade_weights(np.array([25] * 90 + [5] * 10))
    per_sample = weights[torch.tensor([2] * 90 + [0] * 10)]
    assert per_sample.mean().item() == pytest.approx(1.0) and weights[0] > weights[2]


def test_age_l1_adds_the_expected_age_error():
    """Uniform logits put E[age] at 50; targets 30 and 80 add 0.5 x 20 and 0.5 x 30 (mean 12.5) to the age loss,
    and the L1 term's gradient pushes E[age] towards each label."""
    ages, genders = torch.tensor([30, 80]), torch.tensor([0, 1])
    logits = torch.zeros(2, 101, requires_grad=True)
    gender_logit = torch.zeros(2)
    plain = AgeGenderLoss(age_sigma=2.5)
    with_l1 = AgeGenderLoss(age_sigma=2.5, age_l1=0.5)
    base = plain(logits, gender_logit, *plain.targets(ages, genders))[1]
    total, age, _ = with_l1(logits, gender_logit, *with_l1.targets(ages, genders))
    assert (age - base).item() == pytest.approx(0.5 * (20 + 30) / 2, abs=1e-3)
    l1_only = total - plain(logits, gender_logit, *plain.targets(ages, genders))[0]
    (grad,) = torch.autograd.grad(l1_only, logits)
    step = torch.softmax(logits - grad, dim=1) @ torch.arange(101.0)  # one gradient step on the L1 term
    assert step[0] < 50 < step[1]
    with pytest.raises(ValueError):
        AgeGenderLoss(age_l1=-1.0)


class _FixedAges(torch.nn.Module):
    """A 'model' whose age softmax is a spike at the age written in the image's first pixel."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spikes = torch.nn.functional.one_hot(images[:, 0, 0, 0].round().long(), 101).float() * 100.0
        return spikes, torch.ones(len(images))  # P(female) > 0.5 for everyone


def test_validation_mae_within_5_and_gender_on_known_predictions():
    predicted = torch.tensor([30.0, 30.0, 30.0, 30.0])
    labels, genders = torch.tensor([30, 34, 36, 20]), torch.tensor([1, 1, 0, 1])
    images = predicted.view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    loader = [(images, labels, genders)]
    from train.validation import validate

    metrics = validate(_FixedAges(), {"toy": loader}, torch.nn.Identity(), Dist(), contextlib.nullcontext)
    assert metrics["val_mae_toy"] == pytest.approx((0 + 4 + 6 + 10) / 4)
    assert metrics["val_within_5_toy"] == pytest.approx(0.5)  # errors 0 and 4 are within 5 years; 6 and 10 not
    assert metrics["val_gender_acc_toy"] == pytest.approx(0.75)
    assert metrics["val_within_5"] == metrics["val_within_5_toy"]


@pytest.mark.data
def test_init_from_fine_tunes_from_a_run(trained_run, cache, tmp_path):
    """--init-from starts from the parent's EMA weights with a fresh optimizer and schedule, keeps the parent's
    lineage through export, accepts another input size and refuses another backbone."""
    parent = checkpoint.load(trained_run / "best.pt")
    out = tmp_path / "ft"
    argv = BASE + ["--cache", str(cache), "--out", str(out), "--init-from", str(trained_run / "best.pt"),
                   "--age-l1", "0.1", "--epochs", "1", "--lr", "1e-4", "--max-steps", "1"]
    trainer = Trainer(resolve(argv), Dist(), time.monotonic(), argv)
    assert trainer.step == 0 and not trainer.optimizer.state_dict()["state"]
    for name, tensor in parent["ema"]["module"].items():
        assert torch.equal(trainer.net.state_dict()[name], tensor), name
    trainer.fit()
    state = checkpoint.load(out / "last.pt")
    assert state["step"] == 1 and state["parent"]["steps"] == parent["step"] == 32
    assert state["parent"]["commands"] == parent["commands"] and state["config"]["age_l1"] == 0.1

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(WEIGHTS_DIR / "MANIFEST.json", weights)
    reports = tmp_path / "reports"
    export_run(out, "last.pt", weights_dir=weights, log=lambda _: None, reports_dir=reports)
    entry = json.loads((weights / "MANIFEST.json").read_text())["files"]["agegender_efficientnet_lite0.safetensors"]
    parent_entry = entry["training"]["initialised_from"]
    assert parent_entry["epochs_completed"] == 8 and parent_entry["checkpoint"] == str(trained_run / "best.pt")
    # The parent run's history is published beside the fine-tune's own.
    assert parent_entry["metrics_csv"] == str(reports / "train-efficientnet_lite0-init1-metrics.csv")
    assert Path(parent_entry["metrics_csv"]).read_text() == (trained_run / "metrics.csv").read_text()
    assert Path(entry["training"]["metrics_csv"]).read_text() == (out / "metrics.csv").read_text()
    assert 0 <= entry["metrics"]["val"]["utkface"]["within_5"] <= 1

    # Another input size is progressive resizing: same weights, lineage records the parent's size; a cache whose
    # 128 px inference crops would be upsampled to 160 px is pointed out.
    resized = Trainer(resolve(BASE + ["--cache", str(cache), "--out", str(tmp_path / "resized"), "--input-size",
                                      "160", "--init-from", str(trained_run / "best.pt")]), Dist(), time.monotonic(), [])
    assert resized.cfg.input_size == 160 and resized.parent["input_size"] == parent["config"]["input_size"] == 128
    assert "128 px inference crops, below the input size 160" in (tmp_path / "resized" / "train.log").read_text()
    for name, tensor in parent["ema"]["module"].items():
        assert torch.equal(resized.net.state_dict()[name], tensor), name
    with pytest.raises(SystemExit, match="backbone 'efficientnet_lite0', this run 'resnet50'"):
        Trainer(resolve(BASE + ["--cache", str(cache), "--out", str(tmp_path / "bad"), "--backbone", "resnet50",
                                "--init-from", str(trained_run / "best.pt")]), Dist(), time.monotonic(), [])


@pytest.mark.data
def test_fine_tune_of_a_bundled_file_keeps_the_whole_history(trained_run, cache, tmp_path):
    """Export a run, fine-tune the *exported file* twice (a bundled model on a new machine: no run folders of
    its ancestors), export the last: every ancestor's history is on record, none overwritten by its child's."""
    weights, reports = tmp_path / "weights", tmp_path / "reports"
    weights.mkdir()
    shutil.copy(WEIGHTS_DIR / "MANIFEST.json", weights)
    first = export_run(trained_run, "best.pt", weights_dir=weights, log=lambda _: None, reports_dir=reports,
                       onnx=False)
    history = {"first": (trained_run / "metrics.csv").read_text()}
    previous = first
    for stage in ("second", "third"):
        out = tmp_path / stage
        argv = BASE + ["--cache", str(cache), "--out", str(out), "--init-from", str(previous),
                       "--epochs", "1", "--lr", "1e-4", "--max-steps", "1"]
        Trainer(resolve(argv), Dist(), time.monotonic(), argv).fit()
        history[stage] = (out / "metrics.csv").read_text()
        assert history[stage] != history["first"]
        if stage == "second":  # exported, and the third starts from that file
            previous = export_run(out, "last.pt", weights_dir=weights, log=lambda _: None, reports_dir=reports,
                                  onnx=False)
    # the third is a run folder started from the exported second; export it: three stages on record
    export_run(tmp_path / "third", "last.pt", weights_dir=weights, log=lambda _: None, reports_dir=reports,
               onnx=False)
    entry = json.loads((weights / "MANIFEST.json").read_text())["files"][first.name]
    assert f"fine-tuned from {previous}" in entry["description"]  # not "ImageNet-initialised" nor "from scratch"
    training = entry["training"]
    chain = [training, training["initialised_from"], training["initialised_from"]["parent"]]
    assert [Path(r["metrics_csv"]).name for r in chain] == [
        "train-efficientnet_lite0-metrics.csv", "train-efficientnet_lite0-init1-metrics.csv",
        "train-efficientnet_lite0-init2-metrics.csv"]
    assert [Path(r["metrics_csv"]).read_text() for r in chain] == [history["third"], history["second"],
                                                                    history["first"]]


def test_the_description_says_where_the_weights_started():
    assert provenance({"pretrained": True}, None) == "ImageNet-initialised"
    assert provenance({"pretrained": False, "init": "none"}, None) == "trained from scratch"
    # --init msra builds the network without package weights, then loads the MSRA tensors: ImageNet, not scratch
    assert provenance({"pretrained": False, "init": "msra"}, None) == "ImageNet-initialised, msra weights"
    assert provenance({"pretrained": False, "init": "none"}, {"checkpoint": "weights/x.safetensors"}).startswith(
        "fine-tuned from weights/x.safetensors")


def test_average_weights_is_the_weighted_mean_of_floats_and_keeps_counts():
    from train.soup import average_weights

    a = {"w": torch.tensor([0.0, 2.0]), "half": torch.tensor([1.0], dtype=torch.float16),
         "n": torch.tensor(5, dtype=torch.long)}
    b = {"w": torch.tensor([2.0, 4.0]), "half": torch.tensor([3.0], dtype=torch.float16),
         "n": torch.tensor(7, dtype=torch.long)}
    soup = average_weights([a, b])
    assert torch.equal(soup["w"], torch.tensor([1.0, 3.0])) and soup["half"].dtype == torch.float16
    assert soup["half"].item() == 2.0 and soup["n"].item() == 5 and soup["n"].dtype == torch.long
    assert torch.equal(average_weights([a, b], [1, 3])["w"], torch.tensor([1.5, 3.5]))  # normalised: 0.25 / 0.75
    with pytest.raises(ValueError, match="tensor names differ"):
        average_weights([a, {"w": b["w"], "n": b["n"]}])
    with pytest.raises(ValueError, match="different shapes"):
        average_weights([a, {**b, "w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="non-negative"):
        average_weights([a, b], [1.0, -1.0])


@pytest.mark.data
def test_soup_of_a_run_with_itself_validates_as_the_run_and_a_mix_moves_it(trained_run, cache, tmp_path):
    """``python -m train.soup`` scores each ingredient and their average with training's validation: a run averaged
    with itself is the same network, so every metric is equal; averaged with its untrained start it is not."""
    from train.soup import main as soup_main

    best = trained_run / "best.pt"
    argv = BASE + ["--cache", str(cache), "--ema", "0", "--ingredients", str(best), str(best)]
    rows = soup_main(argv + ["--out", str(tmp_path / "same")])
    assert rows["soup"] == rows[str(best)]
    report = json.loads((tmp_path / "same" / "soup.json").read_text())
    assert report["validation"]["soup"]["val_mae"] == rows["soup"]["val_mae"] and report["mix"] == "uniform"

    start = tmp_path / "start.pt"  # the run's checkpoint with untrained weights: a far-away second ingredient
    state = checkpoint.load(best)
    untrained = AgeGenderNet(backbone="efficientnet_lite0", pretrained=False, input_size=state["config"]["input_size"])
    state["ema"] = {"module": untrained.state_dict()}
    torch.save(state, start)
    mixed = soup_main(BASE + ["--cache", str(cache), "--ema", "0", "--ingredients", str(best), str(start),
                              "--mix", "0.9", "0.1", "--out", str(tmp_path / "mixed")])
    assert mixed["soup"]["val_mae"] != rows["soup"]["val_mae"]
