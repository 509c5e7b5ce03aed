"""The ResNet-50 transfer-learning recipe's options, each on a tiny run or on known tensors: per-part learning
rates, frozen stages, strong augmentation, gender-only faces (AFLW) in the loss and validation, and an
MSRA-initialised run whose export the app rebuilds with the recorded layout and normalisation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from agegender.models import AgeGenderNet
from agegender.paths import REPO_DIR, WEIGHTS_DIR, data_root
from train import checkpoint
from train.aflw import FRACTIONS, NAME, SPLITS_DIR, make_splits, read_labels
from train.augment import augment, augment_applied, eval_transform, train_transform
from train.config import parse_lr_mult, resolve
from train.distributed import Dist
from train.init_weights import default_msra_dir
from train.losses import AgeGenderLoss, decade_weights
from train.parts import matched_part, param_groups
from train.train import Trainer, main

from conftest import torchrun_train
from train.validation import validate

RESNET = ["--sets", "utkface", "--backbone", "resnet50", "--input-size", "64", "--batch-size", "8", "--workers", "0",
          "--seed", "0", "--limit-val", "16"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_DIR), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """32 UTKFace train/val crops and 16 AFLW train/val crops, framed by the app's pipeline."""
    if not (data_root() / "utkface" / "images").is_dir() or not (data_root() / NAME / "images").is_dir():
        pytest.skip("needs UTKFace and MTFL/AFLW under AGEGENDER_DATA")
    out = tmp_path_factory.mktemp("crops")
    for cmd in (["train.preprocess", "--limit", "32", "--sets", "utkface", "--splits", "train", "val"],
                ["train.aflw", "--limit", "16"]):
        subprocess.run([sys.executable, "-m", *cmd, "--cache", str(out), "--workers", "1"], cwd=REPO_DIR,
                       env=_env(), check=True, capture_output=True, timeout=300)
    return out


# ------------------------------------------------------------------------------------------ learning rate per part
def test_lr_mult_groups_parameters_by_part():
    assert parse_lr_mult(["stem=0.1", "layer3=0.5"]) == {"stem": 0.1, "layer3": 0.5}
    assert parse_lr_mult({"layer1": 0.2}) == {"layer1": 0.2}
    for bad in (["layer1"], ["layer1=x"], ["=0.1"], ["layer1=-1"]):
        with pytest.raises(SystemExit):
            parse_lr_mult(bad)
    assert matched_part("backbone.layer3.5.conv1.weight", ["layer3", "layer3.5"]) == "layer3.5"  # longest wins
    assert matched_part("backbone.layer1.0.bn1.weight", ["layer1"]) == "layer1"
    assert matched_part("backbone.layer10.x", ["layer1"]) is None  # whole name components only
    assert matched_part("gender_head.bias", ["heads"]) == "heads"
    net = AgeGenderNet("resnet50")
    groups = param_groups(net, 0.05, 1e-3, {"stem": 0.1, "layer1": 0.1, "layer2": 0.2, "layer3": 0.5})
    by_lr = {}
    for g in groups:
        by_lr[g["lr"]] = by_lr.get(g["lr"], 0) + sum(p.numel() for p in g["params"])
        assert g["weight_decay"] == (0.05 if g["params"][0].ndim > 1 else 0.0)
    count = {part: sum(p.numel() for n, p in net.named_parameters() if matched_part(n, [part]))
             for part in ("stem", "layer1", "layer2", "layer3", "layer4", "heads")}
    assert by_lr == pytest.approx({1e-3: count["layer4"] + count["heads"], 1e-4: count["stem"] + count["layer1"],
                                   2e-4: count["layer2"], 5e-4: count["layer3"]})
    assert sum(by_lr.values()) == sum(p.numel() for p in net.parameters())
    with pytest.raises(SystemExit, match="layer9"):
        param_groups(net, 0.05, 1e-3, {"layer9": 0.1})


# -------------------------------------------------------------------------------------------------- augmentation
def _looks_monochrome(image: np.ndarray) -> bool:
    """Grayscale (channels equal) or sepia (R ≥ G ≥ B almost everywhere)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return bool(np.abs(r - b).max() < 3 or ((r >= g - 1).mean() > 0.99 and (g >= b - 1).mean() > 0.99))


def test_strong_augmentation_darkens_degrades_and_ages_photos(astronaut):
    face = cv2.resize(np.ascontiguousarray(astronaut[0:250, 100:350]), (200, 200), interpolation=cv2.INTER_AREA)
    reference = augment(eval_transform(200, 1.25, 160), face.copy())
    stats = {}
    for policy in ("standard", "strong"):
        transform = train_transform(200, 160, policy)
        outs = [augment(transform, face.copy(), seed) for seed in range(200)]
        assert all(o.shape == (160, 160, 3) and o.dtype == np.uint8 for o in outs)
        grain = [np.abs(o.astype(float) - cv2.GaussianBlur(o, (0, 0), 1.0)).mean() for o in outs]
        stats[policy] = {"mono": np.mean([_looks_monochrome(o) for o in outs]),
                         "dark": np.mean([o.mean() < 0.7 * reference.mean() for o in outs]),
                         "grainy": np.mean(np.array(grain) > 6)}
    # Old photos (grayscale, sepia), dark scenes and film grain are all much more frequent under "strong".
    assert stats["strong"]["mono"] > stats["standard"]["mono"] + 0.08, stats
    assert stats["strong"]["dark"] > stats["standard"]["dark"] + 0.08, stats
    assert stats["strong"]["grainy"] > stats["standard"]["grainy"] + 0.05, stats
    with pytest.raises(ValueError, match="policy"):
        train_transform(200, 160, "extreme")


# ----------------------------------------------------------------------------------------- gender-only faces
def test_faces_without_age_have_no_age_loss_and_mix_linearly():
    loss = AgeGenderLoss(age_l1=1.0)
    ages, genders = torch.tensor([30, -1]), torch.tensor([1, 0])
    age_t, gender_t, weight = loss.targets(ages, genders)
    assert float(age_t[1].sum()) == 0.0 and float(age_t[0].sum()) == pytest.approx(1.0)
    logits, gender_logit = torch.randn(2, 101, generator=torch.Generator().manual_seed(0)), torch.zeros(2)
    _, age_loss, gender_loss = loss(logits, gender_logit, age_t, gender_t, weight)
    _, age_only_first, _ = loss(logits[:1], gender_logit[:1], age_t[:1], gender_t[:1], weight[:1])
    assert float(age_loss) == pytest.approx(float(age_only_first) / 2)  # the unaged face adds 0 (batch mean)
    assert float(gender_loss) > 0
    # Mixing an aged face (λ) with an unaged one: its age loss is λ × the aged face's own, L1 term included.
    lam = 0.7
    mixed = age_t[0] * lam + age_t[1] * (1 - lam)
    _, mixed_loss, _ = loss(logits[:1], gender_logit[:1], mixed[None], gender_t[:1], weight[:1])
    assert float(mixed_loss) == pytest.approx(lam * float(age_only_first), rel=1e-5)


def test_validation_keeps_gender_only_sets_out_of_the_age_metrics():
    class Fixed(torch.nn.Module):
        def forward(self, x):  # every face: age 30 with certainty, P(female) > 0.5
            logits = torch.full((len(x), 101), -1e4)
            logits[:, 30] = 0
            return logits, torch.ones(len(x))

    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    aged = DataLoader(TensorDataset(images, torch.tensor([30, 40, 30, 20]), torch.tensor([1, 1, 0, 0])), batch_size=4)
    wild = DataLoader(TensorDataset(images, torch.tensor([-1, -1, -1, -1]), torch.tensor([1, 1, 1, 0])), batch_size=4)
    import contextlib

    m = validate(Fixed(), {"utkface": aged, NAME: wild}, torch.nn.Identity(), Dist(), contextlib.nullcontext)
    assert m["val_mae"] == m["val_mae_utkface"] == pytest.approx(5.0)
    assert m["val_gender_acc"] == m["val_gender_acc_utkface"] == 0.5
    assert m[f"val_gender_acc_{NAME}"] == 0.75 and f"val_mae_{NAME}" not in m


@pytest.mark.data
def test_aflw_labels_and_committed_split():
    faces = read_labels()
    assert len(faces) == 2995 and sum(f.gender for f in faces) == 1822  # the README's 1,822 female
    assert sum(f.pose == 3 for f in faces) == 1825
    splits = make_splits(faces)
    for split, members in splits.items():
        committed = (SPLITS_DIR / f"{NAME}_{split}.txt").read_text().split()
        assert committed == [f.file for f in members], split  # the committed lists are the seeded split
        assert abs(len(members) / len(faces) - FRACTIONS[split]) < 0.01
    names = [set(f.file for f in m) for m in splits.values()]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])


# -------------------------------------------------------------------------------------- runs (tiny, ResNet-50)
@pytest.mark.data
def test_frozen_stages_stay_put_then_train(cache, tmp_path):
    """Freeze stem-layer3 for 2 steps: their weights and BatchNorm statistics do not move, layer4 does; after
    step 2 they train (4 steps over 32 crops, batch 8)."""
    out = tmp_path / "freeze"
    main(RESNET + ["--cache", str(cache), "--out", str(out), "--max-steps", "2", "--epochs", "1",
                   "--freeze", "stem", "layer1", "layer2", "layer3", "--freeze-epochs", "0.5", "--lr", "1e-3"])
    after2 = checkpoint.load(out / "last.pt")["model"]
    torch.manual_seed(0)  # the run's seed: the network it started from
    start = AgeGenderNet("resnet50", input_size=64).state_dict()
    for key in ("backbone.conv1.weight", "backbone.layer3.5.conv3.weight", "backbone.layer1.0.bn1.running_mean",
                "backbone.layer2.0.bn2.weight"):
        torch.testing.assert_close(after2[key], start[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(after2["backbone.layer4.0.conv1.weight"], start["backbone.layer4.0.conv1.weight"])
    main(["--out", str(out), "--resume", "--max-steps", "4"])
    after4 = checkpoint.load(out / "last.pt")["model"]
    assert not torch.equal(after4["backbone.conv1.weight"], start["backbone.conv1.weight"])
    assert not torch.equal(after4["backbone.layer1.0.bn1.running_mean"], start["backbone.layer1.0.bn1.running_mean"])


@pytest.mark.data
def test_msra_run_with_aflw_exports_what_the_app_rebuilds(cache, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from agegender import Estimator
    from train.export import export_run

    if not default_msra_dir().is_dir():
        pytest.skip(f"needs {default_msra_dir()}")
    out = tmp_path / "msra"
    main(RESNET + ["--cache", str(cache), "--out", str(out), "--init", "msra", "--max-steps", "2", "--epochs", "1",
                   "--aflw-val", "--aflw-train", "--augment", "strong", "--lr-mult", "stem=0.1", "layer3=0.5"])
    state = checkpoint.load(out / "last.pt")
    cfg = state["config"]
    assert (cfg["init"], cfg["layout"], cfg["normalization"], cfg["pretrained"]) == ("msra", "v1", "caffe_msra", True)
    report = json.loads((out / "init_report.json").read_text())
    assert report["per_layer"] == {"stem": 5, "layer1": 50, "layer2": 65, "layer3": 95, "layer4": 5}
    assert f"val_gender_acc_{NAME}" in state["metrics"] and f"val_mae_{NAME}" not in state["metrics"]
    assert "AFLW gender acc" in (out / "train.log").read_text()
    assert {g["lr_mult"] for g in state["optimizer"]["param_groups"]} == {1.0, 0.1, 0.5}

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(WEIGHTS_DIR / "MANIFEST.json", weights)
    for detector in WEIGHTS_DIR.glob("*.tflite"):
        shutil.copy(detector, weights)
    path = export_run(out, "last.pt", weights_dir=weights, log=lambda _: None)
    entry = json.loads((weights / "MANIFEST.json").read_text())["files"][path.name]
    assert entry["backbone_options"] == {"layout": "v1"} and entry["input_size"] == 64
    assert entry["normalization"] == {"mean": [103.06, 115.90, 123.15], "std": [1.0, 1.0, 1.0],
                                      "channel_order": "BGR", "scale": 255.0}
    with safe_open(str(path), "pt") as fh:
        assert json.loads(fh.metadata()["normalization"])["channel_order"] == "BGR"
    mean = torch.tensor([123.15, 115.90, 103.06]).view(1, 3, 1, 1)  # the Caffe mean, RGB order, 0-255, std 1
    crops = np.load(cache / "utkface_val.npy")[:4]
    crops = np.stack([augment(eval_transform(crops.shape[1], 1.25, 64), c) for c in crops])
    reference = AgeGenderNet("resnet50", dropout=0.0, input_size=64, backbone_options={"layout": "v1"},
                             normalization="caffe_msra").eval()
    reference.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    with torch.inference_mode():
        expected = (torch.softmax(reference(torch.from_numpy(crops).permute(0, 3, 1, 2).float() - mean)[0], 1)
                    @ torch.arange(101.0)).numpy()
    # The bundled model (its exported ONNX graph, by default) and the file itself (torch) both rebuild the v1 /
    # caffe_msra network: they compute what the reference computes from the exported tensors.
    for est in (Estimator(model="resnet50", weights_dir=weights, detector="short"),
                Estimator(model="resnet50", weights_dir=weights, detector="short", engine="torch"),
                Estimator(model="resnet50", weights=path, weights_dir=weights, detector="short")):
        try:
            assert est.input_size == 64
            if est.engine_name == "torch":
                assert est.net.channel_order == "BGR" and est.net.backbone.layout == "v1"
                torch.testing.assert_close((-est.engine.model.shift / est.engine.model.scale).flatten(),
                                           mean.flatten())
            est.flip_tta = False
            probs, _ = est.predict_batch(crops)
            assert np.abs(probs @ np.arange(101) - expected).max() < 0.05
        finally:
            est.close()
    assert Estimator(model="resnet50", weights_dir=weights, detector="short").engine_name == "onnx"


# -------------------------------------------------------------------------------------------------- distillation
def test_distillation_adds_the_teachers_cross_entropy():
    plain, distilled = AgeGenderLoss(), AgeGenderLoss(distill_weight=0.5)
    age_t, gender_t, weight = plain.targets(torch.tensor([30, 60]), torch.tensor([0, 1]))
    logits = torch.randn(2, 101, generator=torch.Generator().manual_seed(0))
    teacher = torch.softmax(torch.randn(2, 101, generator=torch.Generator().manual_seed(1)), 1)
    _, base, _ = plain(logits, torch.zeros(2), age_t, gender_t, weight)
    _, with_teacher, _ = distilled(logits, torch.zeros(2), age_t, gender_t, weight, teacher)
    ce = -(teacher * torch.log_softmax(logits, 1)).sum(1).mean()
    assert float(with_teacher) == pytest.approx(float(base + 0.5 * ce), rel=1e-5)
    _, no_teacher_rows, _ = distilled(logits, torch.zeros(2), age_t, gender_t, weight, torch.zeros(2, 101))
    assert float(no_teacher_rows) == pytest.approx(float(base))  # faces without targets (AFLW) add nothing
    with pytest.raises(ValueError):
        AgeGenderLoss(distill_weight=-1)


def test_gender_distillation_adds_the_teachers_soft_gender_target():
    plain, distilled = AgeGenderLoss(), AgeGenderLoss(distill_gender_weight=2.0)
    age_t, gender_t, weight = plain.targets(torch.tensor([30, 60, 25]), torch.tensor([0, 1, 1]))
    logits = torch.randn(3, 101, generator=torch.Generator().manual_seed(0))
    gender_logit = torch.tensor([0.3, -1.0, 2.0])
    teacher = torch.cat([torch.softmax(torch.randn(3, 101, generator=torch.Generator().manual_seed(1)), 1),
                         torch.tensor([[0.9], [0.2], [0.6]])], 1)
    teacher[2] = 0  # a face without teacher targets (AFLW)
    _, base_age, base_gender = plain(logits, gender_logit, age_t, gender_t, weight)
    _, age, gender = distilled(logits, gender_logit, age_t, gender_t, weight, teacher)
    soft = torch.nn.functional.binary_cross_entropy_with_logits(gender_logit[:2], torch.tensor([0.9, 0.2]),
                                                                 reduction="sum") / 3
    assert float(age) == pytest.approx(float(base_age))  # the age loss does not see column 101
    assert float(gender) == pytest.approx(float(base_gender + 2.0 * soft), rel=1e-5)
    # a mixup of a face with its teacher (λ = 0.25) and one without: the teacher's P(female), weighted by λ
    mixed = 0.25 * teacher[0:1] + 0.75 * teacher[2:3]
    _, _, g_mixed = distilled(logits[:1], gender_logit[:1], age_t[:1], gender_t[:1], weight[:1], mixed)
    _, _, g_plain = plain(logits[:1], gender_logit[:1], age_t[:1], gender_t[:1], weight[:1])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(gender_logit[:1], torch.tensor([0.9]))
    assert float(g_mixed) == pytest.approx(float(g_plain + 2.0 * 0.25 * bce), rel=1e-5)
    with pytest.raises(ValueError, match="column 101"):
        distilled(logits, gender_logit, age_t, gender_t, weight, teacher[:, :101])
    with pytest.raises(ValueError):
        AgeGenderLoss(distill_gender_weight=-1)


@pytest.mark.data
def test_distillation_targets_and_a_distilled_run(cache, tmp_path):
    from train.distill import compute, teacher_file

    if not (WEIGHTS_DIR / "MANIFEST.json").is_file():
        pytest.skip("needs the bundled weights")
    compute(cache, ("utkface",), limit=None, log=lambda _: None)
    targets = np.load(teacher_file(cache, "utkface"))
    labels = np.loadtxt(cache / "utkface_train.csv", delimiter=",", skiprows=1, usecols=1)
    assert targets.shape == (len(labels), 102) and targets.dtype == np.float16
    np.testing.assert_allclose(targets[:, :101].astype(np.float64).sum(1), 1.0, atol=0.02)
    teacher_age = targets[:, :101].astype(np.float64) @ np.arange(101)
    # The bundled model is a real one: its expected ages track the labels (MAE far below predicting the mean).
    assert np.abs(teacher_age - labels).mean() < 0.6 * np.abs(labels - labels.mean()).mean()
    out = tmp_path / "distilled"
    main(["--sets", "utkface", "--backbone", "efficientnet_lite0", "--no-pretrained", "--batch-size", "8",
          "--workers", "0", "--cache", str(cache), "--out", str(out), "--max-steps", "2", "--distill-weight", "1.0",
          "--distill-gender-weight", "1.0", "--mixup", "0.2"])
    config = checkpoint.load(out / "last.pt")["config"]
    assert config["distill_weight"] == config["distill_gender_weight"] == 1.0


def test_resnet50_yaml_is_the_imagenet_recipe():
    cfg = resolve(["--config", str(REPO_DIR / "train" / "configs" / "resnet50.yaml")])
    assert (cfg.backbone, cfg.init, cfg.layout, cfg.normalization) == ("resnet50", "msra", "auto", "auto")
    assert cfg.lr_mult == {"stem": 0.1, "layer1": 0.1, "layer2": 0.2, "layer3": 0.5}
    assert cfg.freeze == ["stem", "layer1", "layer2", "layer3"] and cfg.freeze_epochs == 0.5
    assert cfg.augment == "strong" and cfg.aflw_val and cfg.ema > 0 and cfg.warmup_epochs > 0
    # The command line still wins over the file (per-part rates given as PART=FACTOR).
    cfg = resolve(["--config", str(REPO_DIR / "train" / "configs" / "resnet50.yaml"), "--lr-mult", "layer3=0.3"])
    assert cfg.lr_mult == {"layer3": 0.3}


def test_dlib_yaml_starts_from_the_face_weights_with_a_slower_trunk():
    from train.netconfig import resolve_normalization

    cfg = resolve(["--config", str(REPO_DIR / "train" / "configs" / "dlib_resnet29.yaml")])
    assert (cfg.backbone, cfg.init, cfg.input_size) == ("dlib_resnet29", "dlib", 150)
    assert resolve_normalization(cfg.normalization, cfg.init) == "dlib"
    net = AgeGenderNet(cfg.backbone)
    rate = {id(p): g["lr_mult"] for g in param_groups(net, cfg.weight_decay, cfg.lr, cfg.lr_mult) for p in g["params"]}
    assert rate[id(net.backbone.stem.conv.weight)] == rate[id(net.backbone.blocks[13].conv2.scale)] == 0.3
    assert rate[id(net.age_head.weight)] == rate[id(net.gender_head.bias)] == 1.0


@pytest.mark.data
def test_init_from_an_exported_model_continues_on_a_new_machine(cache, tmp_path):
    """A session commits its export (weights/*.safetensors + manifest); the next one, without runs/, starts from it."""
    from safetensors.torch import load_file

    from train.export import export_run

    base = ["--sets", "utkface", "--backbone", "efficientnet_lite0", "--no-pretrained", "--batch-size", "8",
            "--workers", "0", "--cache", str(cache), "--limit-val", "8"]
    main(base + ["--out", str(tmp_path / "first"), "--max-steps", "1", "--ema", "0.9"])
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(WEIGHTS_DIR / "MANIFEST.json", weights)
    path = export_run(tmp_path / "first", "last.pt", weights_dir=weights, log=lambda _: None)
    shutil.rmtree(tmp_path / "first")  # the new machine has no run folder
    argv = base + ["--out", str(tmp_path / "second"), "--init-from", str(path)]
    trainer = Trainer(resolve(argv), Dist(), time.monotonic(), argv)
    parent = trainer.parent
    assert parent["checkpoint"] == str(path) and parent["weights"] == "exported fp16 (EMA)"
    assert parent["steps"] == 1 and len(parent["commands"]) == 1 and parent["input_size"] == 128
    exported = load_file(str(path))
    state = trainer.net.state_dict()
    for key in ("age_head.weight", "backbone.net._conv_stem.weight"):
        torch.testing.assert_close(state[key], exported[key].float(), rtol=0, atol=0)
    argv = ["--sets", "utkface", "--backbone", "resnet50", "--cache", str(cache), "--out", str(tmp_path / "x"),
            "--init-from", str(path), "--workers", "0"]
    with pytest.raises(SystemExit, match="backbone"):
        Trainer(resolve(argv), Dist(), time.monotonic(), argv)


@pytest.mark.data
def test_frozen_parts_under_ddp(cache, tmp_path):
    """Two gloo processes: DDP keeps a fixed set of trainable parameters, so frozen ones drop their gradients."""
    out = tmp_path / "ddp"
    cmd = torchrun_train("--sets", "utkface", "--backbone", "efficientnet_lite0", "--no-pretrained", "--batch-size",
                         "8", "--workers", "0", "--cache", str(cache), "--out", str(out), "--max-steps", "2",
                         "--limit-val", "8", "--freeze", "net._conv_stem", "net._bn0", "--freeze-epochs", "1")
    proc = subprocess.run(cmd, cwd=REPO_DIR, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = checkpoint.load(out / "last.pt")["model"]
    torch.manual_seed(0)
    start = AgeGenderNet("efficientnet_lite0").state_dict()
    for key in ("backbone.net._conv_stem.weight", "backbone.net._bn0.weight", "backbone.net._bn0.running_mean"):
        torch.testing.assert_close(trained[key], start[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(trained["age_head.weight"], start["age_head.weight"])
    assert not torch.equal(trained["backbone.net._blocks.0._bn1.running_mean"],
                           start["backbone.net._blocks.0._bn1.running_mean"])


def test_wild_augmentation_degrades_the_chosen_share_and_is_seeded(astronaut):
    """The wild policy applies the degraded-validation generator to about ``degrade_probability`` of the crops,
    the same for the same seed, and its degradations are the evaluation's own (blur, resolution, JPEG...)."""
    face = cv2.resize(np.ascontiguousarray(astronaut[0:250, 100:350]), (200, 200), interpolation=cv2.INTER_AREA)
    shares = {}
    for p in (0.0, 0.5, 1.0):
        transform = train_transform(200, 160, "wild", degrade_probability=p)
        steps = [t for t in transform.transforms if type(t).__name__ == "WildDegradation"]
        assert len(steps) == 1 and steps[0].p == p
        outs = [augment(transform, face.copy(), seed) for seed in range(60)]
        sharpness = [cv2.Laplacian(cv2.cvtColor(o, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for o in outs]
        shares[p] = np.array(sharpness)
        again = augment(transform, face.copy(), 7)
        assert np.array_equal(again, outs[7])
    # Degradation (blur, low resolution, JPEG at quality 10-40, grain) moves the sharpness statistics a lot.
    assert np.median(shares[1.0]) != pytest.approx(np.median(shares[0.0]), rel=0.2), shares
    assert np.mean(shares[0.5] < np.percentile(shares[0.0], 10)) > 0.15
    assert np.mean(shares[1.0] < np.percentile(shares[0.0], 10)) > np.mean(shares[0.5] < np.percentile(shares[0.0], 10))


def test_augment_applied_names_the_steps_that_ran(astronaut):
    """The flag behind ``--balance-scope degraded``: WildDegradation is reported exactly when it ran, and the
    image is the one ``augment`` gives for the same seed."""
    face = cv2.resize(np.ascontiguousarray(astronaut[0:250, 100:350]), (200, 200), interpolation=cv2.INTER_AREA)
    for p, expected in ((0.0, {False}), (1.0, {True}), (0.5, {False, True})):
        transform = train_transform(200, 160, "wild", degrade_probability=p)
        flags = set()
        for seed in range(12):
            image, applied = augment_applied(transform, face.copy(), seed)
            assert np.array_equal(image, augment(transform, face.copy(), seed))
            assert "RandomResizedCrop" in applied  # every sample is cropped
            flags.add("WildDegradation" in applied)
        assert flags == expected, p


def test_balance_on_degraded_samples_only():
    """Only the samples marked degraded (and with an age) take the decade weights; the rest keep weight 1."""
    loss = AgeGenderLoss(balance_weights=decade_weights(np.array([25] * 90 + [75] * 10)))
    ages, genders = torch.tensor([25, 75, 75, -1]), torch.tensor([0, 1, 0, 1])
    _, _, everywhere = loss.targets(ages, genders)
    _, _, degraded_only = loss.targets(ages, genders, torch.tensor([False, True, False, True]))
    assert everywhere[1] > 1 > everywhere[0] and everywhere[3] == 1
    assert degraded_only.tolist() == pytest.approx([1.0, float(everywhere[1]), 1.0, 1.0])


@pytest.mark.data
def test_a_run_balanced_on_degraded_samples_passes_the_flags(cache, tmp_path, monkeypatch):
    """``--balance --balance-scope degraded`` hands the loss one flag per sample (True for about the chosen share);
    without the wild policy nothing would be degraded, so it is refused."""
    seen: list[torch.Tensor] = []
    targets = AgeGenderLoss.targets

    def spy(self, ages, genders, balanced=None):
        seen.append(balanced)
        return targets(self, ages, genders, balanced)

    monkeypatch.setattr(AgeGenderLoss, "targets", spy)
    args = RESNET + ["--cache", str(cache), "--max-steps", "3", "--epochs", "1", "--balance",
                     "--balance-scope", "degraded", "--aflw-train"]
    with pytest.raises(SystemExit, match="--augment wild"):
        main(args + ["--out", str(tmp_path / "standard")])
    main(args + ["--out", str(tmp_path / "wild"), "--augment", "wild", "--degrade-probability", "0.5"])
    assert len(seen) == 3 and all(s is not None and s.dtype == torch.bool and len(s) == 8 for s in seen)
    assert 0 < int(sum(s.sum() for s in seen)) < 24
