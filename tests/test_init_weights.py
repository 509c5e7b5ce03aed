"""ImageNet initialisation of ResNet-50 (train.init_weights), its v1 layout and its recorded normalisation.

The MSRA mapping is checked twice: on a folder of Caffe-named tensors written here from a known network (runs on
any clone), and on the shared MSRA files themselves (data tests: all 312 land, and the BatchNorm statistics they
carry match what real photos produce, which only holds when every tensor is in its right place)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from agegender import Estimator
from agegender.models import AgeGenderNet, Normalization, net_options
from agegender.models.registry import CAFFE_MSRA, IMAGENET
from agegender.models.resnet import ResNet
from agegender.paths import data_root
from train.init_weights import MSRA_FILES, default_msra_dir, initialise, load_msra, load_torchvision

MSRA_PER_LAYER = {"stem": 5, "layer1": 50, "layer2": 65, "layer3": 95, "layer4": 5}  # conv + 2 BN stats + 2 affine


def msra_net() -> AgeGenderNet:
    return AgeGenderNet("resnet50", backbone_options={"layout": "v1"}, normalization="caffe_msra")


def msra_dir() -> Path:
    folder = default_msra_dir()
    if not folder.is_dir():
        pytest.skip(f"needs the MSRA ResNet-50 tensors in {folder}")
    return folder


# ------------------------------------------------------------------------------------------------------ layout
def test_v1_layout_strides_in_the_first_1x1_convolution():
    v1, v15 = ResNet(layout="v1"), ResNet(layout="v1.5")
    for layer in ("layer2", "layer3", "layer4"):
        a, b = getattr(v1, layer)[0], getattr(v15, layer)[0]
        assert (a.conv1.stride, a.conv2.stride) == ((2, 2), (1, 1))
        assert (b.conv1.stride, b.conv2.stride) == ((1, 1), (2, 2))
        assert a.downsample[0].stride == b.downsample[0].stride == (2, 2)
    assert v1.layer1[0].conv1.stride == (1, 1)  # layer1 does not down-sample
    # Same tensors, different function: a v1.5 state dict loads into v1 but computes something else.
    v1.load_state_dict(v15.state_dict())
    v1.eval(), v15.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for m in list(v1.modules()) + list(v15.modules()):  # make the residual branches count
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
        assert not torch.allclose(v1(x), v15(x), atol=1e-3)
    with pytest.raises(ValueError, match="layout"):
        ResNet(layout="v2")


# -------------------------------------------------------------------------------------------------- normalisation
def test_normalization_presets_and_bgr_input_is_reordered_by_the_network():
    mean, std = CAFFE_MSRA.rgb_unit()  # BGR 0-255 minus (103.06, 115.90, 123.15), restated as RGB 0-1
    np.testing.assert_allclose(mean, (123.15 / 255, 115.90 / 255, 103.06 / 255))
    np.testing.assert_allclose(std, (1 / 255,) * 3)
    assert IMAGENET.rgb_unit() == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert Normalization.from_any(CAFFE_MSRA.as_dict()) == CAFFE_MSRA == Normalization.from_any("caffe_msra")
    with pytest.raises(ValueError):
        Normalization(channel_order="GBR")
    torch.manual_seed(0)
    bgr = msra_net().eval()
    assert bgr.channel_order == "BGR" and bgr.mean == mean
    rgb = AgeGenderNet("resnet50", backbone_options={"layout": "v1"}).eval()
    rgb.load_state_dict(bgr.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(bgr.forward_features(x), rgb.forward_features(x.flip(1)))


def test_net_options_read_what_export_records(tmp_path):
    entry = {"input_size": 160, "backbone_options": {"layout": "v1"}, "normalization": CAFFE_MSRA.as_dict()}
    assert net_options(entry) == {"input_size": 160, "backbone_options": {"layout": "v1"},
                                  "normalization": CAFFE_MSRA}
    # Entries written before layouts and normalisations were recorded: what those runs used.
    old = net_options({"input_size": 128, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    assert old == {"input_size": 128, "normalization": IMAGENET}
    assert net_options(None) == {} and net_options(tmp_path / "missing.safetensors") == {}
    # A weights file given by path: the Estimator builds the network its metadata describes.
    torch.manual_seed(0)
    net = AgeGenderNet("resnet50", dropout=0.0, input_size=96, **{k: v for k, v in entry.items() if k != "input_size"})
    path = tmp_path / "v1.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata={
        "format": "agegender", "backbone": "resnet50", "input_size": "96", "backbone_options": json.dumps({"layout": "v1"}),
        "normalization": json.dumps(CAFFE_MSRA.as_dict())})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = Estimator(model="resnet50", weights=path, detector="short")
    try:
        assert est.input_size == 96 and est.net.channel_order == "BGR"
        assert est.net.backbone.layer2[0].conv1.stride == (2, 2)
        # The engine's input normalisation (inside ProbabilityModel, and so inside the exported graph) is the
        # recorded one: x * scale + shift = (x - mean) / std with the Caffe mean in RGB order and std 1 (0-255).
        model = est.engine.model
        torch.testing.assert_close((-model.shift / model.scale).flatten(), torch.tensor([123.15, 115.90, 103.06]))
        torch.testing.assert_close((1 / model.scale).flatten(), torch.ones(3))
    finally:
        est.close()


# ------------------------------------------------------------------------------------------------------ mapping
def _write_caffe_folder(source: ResNet, folder: Path, stem_bias: np.ndarray) -> None:
    """The README's naming, inverted: torchvision name → Caffe blob files (what baughg/resnet50_matlab dumped)."""
    folder.mkdir()
    state = {k: v.numpy() for k, v in source.state_dict().items()}

    def write(name: str, values: np.ndarray) -> None:
        np.asarray(values, "<f4").tofile(folder / f"{name}.bin")

    def conv_bn(caffe: str, conv: str, bn: str, conv_missing: bool = False) -> None:
        if not conv_missing:
            write(f"{caffe}.0" if caffe == "conv1" else f"res{caffe}.0", state[f"{conv}.weight"])
        bn_name, scale_name = ("bn_conv1", "scale_conv1") if caffe == "conv1" else (f"bn{caffe}", f"scale{caffe}")
        mean = state[f"{bn}.running_mean"] + (stem_bias if caffe == "conv1" else 0)
        write(f"{bn_name}.0", mean), write(f"{bn_name}.1", state[f"{bn}.running_var"]), write(f"{bn_name}.2", [1.0])
        write(f"{scale_name}.0", state[f"{bn}.weight"]), write(f"{scale_name}.1", state[f"{bn}.bias"])

    conv_bn("conv1", "conv1", "bn1")
    write("conv1.1", stem_bias)
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for b in range(blocks):
            prefix, letter = f"layer{stage - 1}.{b}", "abcdef"[b]
            for branch, i in (("2a", 1), ("2b", 2), ("2c", 3)):
                missing = stage == 5 and not (b == 0 and branch == "2a")
                conv_bn(f"{stage}{letter}_branch{branch}", f"{prefix}.conv{i}", f"{prefix}.bn{i}", missing)
            if b == 0:
                conv_bn(f"{stage}a_branch1", f"{prefix}.downsample.0", f"{prefix}.downsample.1", stage == 5)
    write("fc1000.1", np.zeros(1000))
    mean_image = np.broadcast_to(np.array(CAFFE_MSRA.mean, "<f4")[:, None, None], (3, 224, 224))
    write("ResNet_mean.binaryproto", mean_image)


def test_msra_mapping_on_a_known_network(tmp_path):
    torch.manual_seed(5)
    source = ResNet(layout="v1")
    for m in source.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
    bias = np.linspace(-0.5, 0.5, 64).astype(np.float32)
    _write_caffe_folder(source, tmp_path / "msra", bias)
    assert len(list((tmp_path / "msra").glob("*.bin"))) == MSRA_FILES
    torch.manual_seed(6)
    net = msra_net()
    report = initialise(net, "msra", tmp_path / "msra")
    assert report.per_layer() == MSRA_PER_LAYER
    assert len(report.loaded) + len(report.folded) + len(report.checked) + len(report.skipped) == MSRA_FILES
    assert set(report.folded) == {"conv1.1"} and "fc1000.1" in report.skipped
    loaded, src = net.backbone.state_dict(), source.state_dict()
    for key in report.loaded:  # bn1.running_mean included: Caffe's (running mean + bias) minus the folded bias
        torch.testing.assert_close(loaded[key], src[key], rtol=0, atol=1e-6, msg=key)
    # layer4 beyond its first 1x1 convolution is fresh, and its blocks start as identities (last BN zero);
    # the pretrained blocks keep their trained last BatchNorm.
    assert not torch.equal(loaded["layer4.0.conv2.weight"], src["layer4.0.conv2.weight"])
    for b in range(3):
        assert torch.count_nonzero(loaded[f"layer4.{b}.bn3.weight"]) == 0
        assert f"layer4.{b}.conv2.weight" in report.fresh
    torch.testing.assert_close(loaded["layer3.5.bn3.weight"], src["layer3.5.bn3.weight"])
    assert {"age_head.weight", "gender_head.bias"} <= set(report.fresh)
    # A wrong layout or normalisation is refused rather than silently producing a mis-wired network.
    with pytest.raises(ValueError, match="v1"):
        load_msra(ResNet(layout="v1.5"), tmp_path / "msra")
    with pytest.raises(ValueError, match="caffe_msra"):
        initialise(AgeGenderNet("resnet50", backbone_options={"layout": "v1"}), "msra", tmp_path / "msra")


def test_torchvision_mapping_from_a_state_dict_built_here(tmp_path):
    torch.manual_seed(7)
    source = ResNet(layout="v1.5")
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    torch.save(state, tmp_path / "resnet50.pth")
    torch.manual_seed(8)
    net = AgeGenderNet("resnet50")
    report = initialise(net, "torchvision", tmp_path / "resnet50.pth")
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    assert len(report.loaded) == 53 + 53 * 4  # every convolution and BatchNorm tensor of the trunk
    for key, value in source.state_dict().items():
        torch.testing.assert_close(net.backbone.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match="v1.5"):
        load_torchvision(ResNet(layout="v1"), tmp_path / "resnet50.pth")


# ----------------------------------------------------------------------------------------------- the real tensors
@pytest.mark.data
def test_all_312_msra_tensors_land():
    folder = msra_dir()
    net = msra_net()
    report = initialise(net, "msra", folder)
    assert len(report.loaded) + len(report.folded) + len(report.checked) + len(report.skipped) == MSRA_FILES == \
        len(list(folder.glob("*.bin")))
    assert report.per_layer() == MSRA_PER_LAYER
    # Skipped: the classifier bias and the BatchNorm/Scale tensors of the 9 layer4 convolutions that are missing.
    assert len(report.skipped) == 1 + 9 * 5
    assert all(k.startswith(("bn5", "scale5", "fc1000")) for k in report.skipped)
    state = net.backbone.state_dict()
    np.testing.assert_array_equal(state["layer3.5.conv3.weight"].numpy().ravel(),
                                  np.fromfile(folder / "res4f_branch2c.0.bin", "<f4"))
    np.testing.assert_array_equal(state["layer2.0.downsample.1.running_var"].numpy(),
                                  np.fromfile(folder / "bn3a_branch1.1.bin", "<f4"))
    np.testing.assert_array_equal(state["layer4.0.bn1.weight"].numpy(), np.fromfile(folder / "scale5a_branch2a.0.bin",
                                                                                   "<f4"))


@pytest.mark.data
def test_msra_batchnorm_statistics_match_real_photos():
    """Real photos through the loaded network: at every BatchNorm from layer1 to layer3 (and layer4.0.bn1) the batch
    mean of its input correlates with the stored running mean and the batch variance is close to the stored one.
    A tensor in the wrong place breaks this — checked below by reading each BN's statistics from its neighbour."""
    folder = msra_dir()
    photos = sorted(data_root().joinpath("group_photos").glob("*/*.jpg"))
    if len(photos) < 10:
        pytest.skip("needs the group photos")
    images = np.stack([cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), (224, 224),
                                  interpolation=cv2.INTER_AREA) for p in photos])
    net = msra_net().eval()
    initialise(net, "msra", folder)
    seen = {}
    norms = {n: m for n, m in net.backbone.named_modules() if isinstance(m, nn.BatchNorm2d)
             and (not n.startswith("layer4") or n == "layer4.0.bn1")}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, i[0])) for n, m in norms.items()]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    mean = torch.tensor(net.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(net.std).view(1, 3, 1, 1) * 255
    with torch.inference_mode():
        net((x - mean) / std)
    for h in hooks:
        h.remove()
    assert len(norms) == 1 + (10 + 13 + 19) + 1  # stem, layer1-3, layer4.0.bn1

    def agreement(batch: torch.Tensor, m: nn.BatchNorm2d) -> tuple[float, float]:
        bm, bv = batch.mean((0, 2, 3)), batch.var((0, 2, 3))
        corr = float(np.corrcoef(bm.numpy(), m.running_mean.numpy())[0, 1])
        return corr, float((bv / m.running_var).median())

    # The stem's means are all near 0, so compare them in units of the stored standard deviation instead.
    stem = seen.pop("bn1")
    shift = (stem.mean((0, 2, 3)) - net.backbone.bn1.running_mean).abs() / net.backbone.bn1.running_var.sqrt()
    assert float(shift.median()) < 0.25
    corrs, ratios = zip(*(agreement(seen[n], norms[n]) for n in seen))
    assert min(corrs) > 0.55 and float(np.median(corrs)) > 0.85, corrs
    assert 0.5 < min(ratios) and max(ratios) < 2.0, ratios
    # Control: the same measure against a neighbouring block's statistics (same width) fails.
    wrong = [agreement(seen[f"layer3.{b}.bn1"], norms[f"layer3.{b + 1}.bn1"])[0] for b in range(5)]
    assert float(np.median(wrong)) < 0.5, wrong


@pytest.mark.data
def test_msra_initialised_network_trains_at_the_training_input_size():
    """One forward/backward pass at the recipe's input size (train/configs/resnet50.yaml), in train mode."""
    import yaml

    from agegender.paths import REPO_DIR

    msra_dir()
    size = yaml.safe_load((REPO_DIR / "train" / "configs" / "resnet50.yaml").read_text())["input_size"]
    torch.manual_seed(0)
    net = msra_net()
    net.input_size = size
    initialise(net, "msra")
    net.train()
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255
    mean = torch.tensor(net.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(net.std).view(1, 3, 1, 1) * 255
    age, gender = net((x - mean) / std)
    assert age.shape == (4, 101) and gender.shape == (4,)
    assert torch.isfinite(age).all() and torch.isfinite(gender).all()
    (age.logsumexp(1).mean() + gender.mean()).backward()
    assert net.backbone.conv1.weight.grad is not None and torch.isfinite(net.backbone.conv1.weight.grad).all()
    assert float(net.age_head.weight.grad.abs().sum()) > 0
