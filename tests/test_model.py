"""AgeGenderNet: shapes, the torchvision-compatible ResNet-50, determinism, and a hand-built weights file whose
answer is known in advance, loaded through the public Estimator."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from agegender import Estimator, WeightsError
from agegender.models import AgeGenderNet, NUM_AGE_BINS, backbone_spec, create_backbone, list_backbones
from agegender.models.resnet import ResNet, load_torchvision_state_dict

BACKBONES = ("resnet50", "efficientnet_lite0")

# torchvision.models.resnet50(): 25,557,032 parameters, of which the 1000-class fc has 2048 * 1000 + 1000.
TORCHVISION_RESNET50_PARAMS = 25_557_032
TORCHVISION_FC_PARAMS = 2048 * 1000 + 1000


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {name: AgeGenderNet(name, dropout=0.0).eval() for name in BACKBONES}


def test_registry():
    assert set(BACKBONES) <= set(list_backbones())
    for name in BACKBONES:
        spec = backbone_spec(name)
        assert spec.input_size == 128 and len(spec.mean) == len(spec.std) == 3
    with pytest.raises(ValueError, match="unknown backbone"):
        backbone_spec("vgg16")


@pytest.mark.parametrize("name", BACKBONES)
def test_output_shapes_and_softmax(name, nets):
    net = nets[name]
    assert net.input_size == 128 and net.backbone_name == name
    x = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        age_logits, gender_logit = net(x)
        features = net.forward_features(x)
    assert age_logits.shape == (3, NUM_AGE_BINS) == (3, 101)
    assert gender_logit.shape == (3,)
    assert features.shape == (3, net.backbone.num_features)
    probs = torch.softmax(age_logits, dim=1)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    assert torch.all(torch.isfinite(age_logits)) and torch.all(torch.isfinite(gender_logit))
    with torch.inference_mode():  # batch of one works too (no BatchNorm batch-statistics issues in eval)
        a1, g1 = net(x[:1])
    torch.testing.assert_close(a1, age_logits[:1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(g1, gender_logit[:1], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------- ResNet-50 = torchvision layout
def test_resnet50_matches_torchvision_layout():
    model = create_backbone("resnet50")
    assert isinstance(model, ResNet) and isinstance(model.fc, nn.Identity)
    state = model.state_dict()
    known = {
        "conv1.weight": (64, 3, 7, 7), "bn1.weight": (64,), "bn1.running_mean": (64,),
        "layer1.0.conv1.weight": (64, 64, 1, 1), "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer1.0.downsample.1.running_var": (256,),
        "layer2.0.conv2.weight": (128, 128, 3, 3), "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "layer2.3.bn3.weight": (512,), "layer3.5.conv3.weight": (1024, 256, 1, 1),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1), "layer4.2.bn3.running_var": (2048,),
        "layer4.2.bn3.num_batches_tracked": (),
    }
    for key, shape in known.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert "layer1.1.downsample.0.weight" not in state and "fc.weight" not in state
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 53 and len(bns) == 53
    # torchvision's state dict has 320 entries; without fc.weight / fc.bias: 318.
    assert len(state) == 318
    n_params = sum(p.numel() for p in model.parameters())
    assert TORCHVISION_RESNET50_PARAMS - TORCHVISION_FC_PARAMS == 23_508_032
    assert n_params == 23_508_032
    assert model.num_features == 2048


def test_load_torchvision_state_dict_round_trips():
    torch.manual_seed(3)
    source = create_backbone("resnet50")
    for m in source.modules():  # make the buffers non-trivial so a missed key would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    checkpoint = {k: v.clone() for k, v in source.state_dict().items()}
    checkpoint["fc.weight"] = torch.randn(1000, 2048)  # a torchvision checkpoint carries the ImageNet head
    checkpoint["fc.bias"] = torch.randn(1000)
    torch.manual_seed(4)
    target = create_backbone("resnet50")
    load_torchvision_state_dict(target, checkpoint)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0, msg=key)
    x = torch.randn(1, 3, 64, 64)
    source.eval(), target.eval()
    with torch.inference_mode():
        torch.testing.assert_close(target(x), source(x))
    # A checkpoint missing a tensor is refused (strict).
    del checkpoint["layer4.2.bn3.running_var"]
    with pytest.raises(RuntimeError, match="layer4.2.bn3.running_var"):
        load_torchvision_state_dict(create_backbone("resnet50"), checkpoint)


def test_resnet50_has_no_pretrained_offline():
    with pytest.raises(ValueError):
        create_backbone("resnet50", pretrained=True)


# --------------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", BACKBONES)
def test_seeded_untrained_net_is_deterministic(name):
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(42))
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = AgeGenderNet(name, dropout=0.0).eval()
        with torch.inference_mode():
            outs.append(net(x))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=0, atol=0)
    torch.manual_seed(124)
    other = AgeGenderNet(name, dropout=0.0).eval()
    with torch.inference_mode():
        assert not torch.equal(other(x)[0], outs[0][0]), "a different seed must give a different network"


# ------------------------------------------------------------------------------ known weights → known prediction
def _rigged_weights(path, backbone: str, age_logits: dict[int, float], gender_bias: float) -> None:
    """A full state dict whose heads ignore the image: age logits = bias only, gender logit = ``gender_bias``."""
    torch.manual_seed(0)
    net = AgeGenderNet(backbone)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    state["age_head.weight"].zero_()
    bias = torch.full((NUM_AGE_BINS,), -30.0)
    for age, logit in age_logits.items():
        bias[age] = logit
    state["age_head.bias"] = bias
    state["gender_head.weight"].zero_()
    state["gender_head.bias"] = torch.tensor([gender_bias])
    save_file(state, str(path))


@pytest.fixture(scope="module")
def rigged_estimator(tmp_path_factory):
    path = tmp_path_factory.mktemp("rigged") / "rigged.safetensors"
    _rigged_weights(path, "efficientnet_lite0", {30: 30.0}, gender_bias=20.0)
    est = Estimator(model="efficientnet_lite0", weights=path, detector="full")
    yield est
    est.close()


def test_rigged_weights_give_the_known_answer(rigged_estimator, astronaut):
    est = rigged_estimator
    assert est.trained and est.weights_info["trained"] is True
    faces = est.predict(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.age == pytest.approx(30.0, abs=1e-6)
    assert face.age_low == face.age_high == 30.0
    assert face.age_probs[30] == pytest.approx(1.0, abs=1e-9)
    assert face.gender == "female" and face.p_female == pytest.approx(1.0, abs=1e-6)
    assert face.groups["30-39"] == pytest.approx(1.0, abs=1e-9)
    assert face.p_at_least(30) == pytest.approx(1.0) and face.p_at_least(31) == pytest.approx(0.0, abs=1e-9)
    d = face.to_dict()
    assert d["age"] == 30.0 and d["gender"] == "female" and d["age_group"] == "30-39" and d["p_adult"] == 1.0


def test_rigged_two_point_distribution_and_male(tmp_path, astronaut):
    path = tmp_path / "two_point.safetensors"
    _rigged_weights(path, "efficientnet_lite0", {20: 10.0, 40: 10.0}, gender_bias=-20.0)
    est = Estimator(model="efficientnet_lite0", weights=str(path), detector="full", groups="life4")
    try:
        crops = np.zeros((2, 128, 128, 3), np.uint8)
        age_probs, p_female = est.predict_batch(crops)
        np.testing.assert_allclose(age_probs[:, 20], 0.5, atol=1e-6)
        np.testing.assert_allclose(age_probs[:, 40], 0.5, atol=1e-6)
        face = est.predict(astronaut)[0]
    finally:
        est.close()
    assert face.age == pytest.approx(30.0, abs=1e-4)
    assert (face.age_low, face.age_high) == (20.0, 40.0)
    assert face.gender == "male" and face.p_female < 1e-6
    assert list(face.groups) == list(est.preset.labels) and face.groups["adult (20-59)"] == pytest.approx(1.0)


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = tmp_path / "lite.safetensors"
    _rigged_weights(path, "efficientnet_lite0", {30: 1.0}, 0.0)
    with pytest.raises(WeightsError, match="resnet50"):
        Estimator(model="resnet50", weights=path)


def test_missing_weights_file_is_refused(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        Estimator(model="efficientnet_lite0", weights=tmp_path / "absent.safetensors")


def test_untrained_estimator_warns():
    with pytest.warns(UserWarning, match="UNTRAINED"):
        est = Estimator(model="efficientnet_lite0", weights=None, detector="full")
    try:
        assert est.trained is False and est.info()["weights"]["trained"] is False
    finally:
        est.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing else is warned about
        torch.manual_seed(0)
        AgeGenderNet("efficientnet_lite0")


def test_interval_contains_the_age_for_a_skewed_distribution(tmp_path, astronaut):
    """95 % at 28 and 5 % at 100: the central 80 % is 28-28 but the expected age is 31.6; the reported interval
    must contain the reported age."""
    path = tmp_path / "skewed.safetensors"
    _rigged_weights(path, "efficientnet_lite0", {28: float(np.log(0.95)) + 10, 100: float(np.log(0.05)) + 10}, 0.0)
    est = Estimator(model="efficientnet_lite0", weights=path, detector="full")
    try:
        face = est.predict(astronaut)[0]
    finally:
        est.close()
    assert face.age == pytest.approx(0.95 * 28 + 0.05 * 100, abs=1e-3)
    assert face.age_low == 28.0 and face.age_high == 32.0
    assert face.p_female == pytest.approx(0.5)
