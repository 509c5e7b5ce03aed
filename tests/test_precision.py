"""``precision="auto"``: int8 only where the CPU has an int8 dot-product instruction and a probe finds it faster."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agegender import Estimator
from agegender.engines import precision
from agegender.weights import model_entry, onnx_entry

X86_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx avx2 fma\n\nprocessor\t: 1\n"
X86_VNNI = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_tile amx_int8 amx_bf16\n"
ARM_DOTPROD = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\nCPU part\t: 0xd0c\n"


@pytest.fixture(autouse=True)
def fresh_probe_cache(monkeypatch):
    monkeypatch.delenv("AGEGENDER_INT8", raising=False)
    monkeypatch.setattr(precision, "_PROBED", {})


@pytest.mark.parametrize("text, expected", [(X86_AVX2, []), (X86_VNNI, ["avx512_vnni", "amx_int8"]),
                                            (ARM_DOTPROD, ["asimddp"]), ("", [])])
def test_int8_instructions_from_cpuinfo(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert precision.int8_instructions(precision.cpu_flags(cpuinfo)) == expected


def test_cpu_flags_of_a_missing_file_is_empty(tmp_path):
    assert precision.cpu_flags(tmp_path / "absent") == set()


def _sleeper(ms: float):
    def run(batch):
        time.sleep(ms / 1000)
    return run


def test_probe_keeps_int8_only_when_clearly_faster():
    fast = precision.probe(_sleeper(16), _sleeper(4), input_size=8, rounds=3)
    assert fast.precision == "int8" and fast.int8_ms_per_view < fast.float32_ms_per_view
    slow = precision.probe(_sleeper(4), _sleeper(16), input_size=8, rounds=3)
    assert slow.precision == "float32" and "<" in slow.reason
    # Equal cost is not worth int8's accuracy cost: below MIN_SPEEDUP it stays float32.
    assert precision.probe(_sleeper(8), _sleeper(8), input_size=8, rounds=3).precision == "float32"


def test_no_dot_product_instruction_means_float32_without_building_anything():
    def never():
        raise AssertionError("the int8 graph must not be loaded on a CPU without VNNI/AMX/dotprod")

    choice = precision.choose("sha", never, 160, flags={"avx2", "fma"})
    assert choice.precision == "float32" and "no int8" in choice.reason


def test_probe_runs_once_per_graph():
    calls = []

    def make():
        calls.append(1)
        return _sleeper(8), _sleeper(1)

    first = precision.choose("sha-a", make, 8, flags={"avx512_vnni"})
    again = precision.choose("sha-a", make, 8, flags={"avx512_vnni"})
    assert first == again and first.precision == "int8" and len(calls) == 1
    precision.choose("sha-b", make, 8, flags={"avx512_vnni"})
    assert len(calls) == 2


@pytest.mark.parametrize("value, expected", [("0", "float32"), ("1", "int8")])
def test_environment_override(monkeypatch, value, expected):
    monkeypatch.setenv("AGEGENDER_INT8", value)
    choice = precision.choose("sha", lambda: pytest.fail("no probe under an override"), 160, flags={"amx_int8"})
    assert choice.precision == expected


def _bundled_int8(model: str) -> str:
    found = model_entry(model)
    if found is None or onnx_entry(found[0], precision="int8") is None:
        pytest.skip(f"no int8 graph of {model} is bundled")
    return found[0]


def _astronaut_views(model: str, astronaut: np.ndarray) -> np.ndarray:
    """The astronaut's face at the three default framings, at the model's input size (the engine adds mirrors)."""
    from agegender.crops.align import crop_face
    from agegender.detection.detector import FaceDetector
    from agegender.estimator import SCALE_TTA_CONTEXTS

    size = int(model_entry(model)[1]["input_size"])
    detector = FaceDetector("short")
    (det,) = detector.detect(astronaut)
    detector.close()
    return np.stack([crop_face(astronaut, det, size=size, context=c) for c in SCALE_TTA_CONTEXTS])


def _raw_face(model: str, graph_precision: str, views: np.ndarray) -> tuple[np.ndarray, float]:
    """The uncalibrated age distribution and P(female) of a bundled graph over ``views`` and their mirrors,
    averaged as the engine averages them. The int8 graph runs unfused (quantize, dequantize, float convolution):
    the integer arithmetic that VNNI/AMX/dotprod kernels compute exactly."""
    import onnxruntime as ort

    from agegender.weights import verified_bytes

    name, _ = onnx_entry(model_entry(model)[0], precision=graph_precision)
    options = ort.SessionOptions()
    if graph_precision == "int8":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(verified_bytes(name), options, providers=["CPUExecutionProvider"])
    age, female = sess.run(None, {sess.get_inputs()[0].name: np.concatenate([views, views[:, :, ::-1]])})
    return age.mean(0), float(female.mean())


@pytest.mark.parametrize("model", ["efficientnet_lite0", "resnet50"])
def test_bundled_int8_graph_agrees_with_float32(model, astronaut):
    """On a CPU with an int8 dot product, the engine's int8 run reads the face as float32 does. Without one,
    onnxruntime's u8s8 kernels saturate (the ResNet-50 moved the astronaut by 4.3 years on an AVX2 EPYC, which is
    why ``auto`` never runs int8 there), so the graph's own arithmetic is checked emulated, against float32."""
    _bundled_int8(model)
    if not precision.int8_instructions():
        views = _astronaut_views(model, astronaut)
        (fp32_probs, fp32_female), (int8_probs, int8_female) = (_raw_face(model, p, views)
                                                                for p in ("float32", "int8"))
        bins = np.arange(len(fp32_probs))
        assert (int8_female >= 0.5) == (fp32_female >= 0.5)
        assert abs(int8_probs @ bins - fp32_probs @ bins) < 1.5, (int8_probs @ bins, fp32_probs @ bins)
        assert np.abs(int8_probs - fp32_probs).sum() < 0.3
        return
    results = {}
    for p in ("float32", "int8"):
        est = Estimator(model=model, precision=p, detector="short")
        assert est.info()["engine"]["precision"] == p
        results[p] = est.predict(astronaut)
        est.close()
    (fp32,), (int8,) = results["float32"], results["int8"]
    assert int8.gender == fp32.gender
    assert abs(int8.age - fp32.age) < 1.5, (int8.age, fp32.age)
    assert np.abs(np.asarray(int8.age_probs) - np.asarray(fp32.age_probs)).sum() < 0.3


def test_auto_on_a_vnni_cpu_runs_what_the_probe_chose(monkeypatch, astronaut):
    """The real probe over both bundled Lite0 graphs, on a CPU made to look as if it had VNNI: whichever graph the
    timing favours, the engine that runs is the one the recorded choice names, and both times are recorded."""
    _bundled_int8("efficientnet_lite0")
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: {"avx2", "avx512_vnni"})
    est = Estimator(model="efficientnet_lite0", detector="short")
    choice = est.info()["weights"]["precision_choice"]
    assert choice["precision"] == est.info()["engine"]["precision"]
    assert choice["float32_ms_per_view"] > 0 and choice["int8_ms_per_view"] > 0
    assert len(est.predict(astronaut)) == 1
    est.close()


def test_auto_on_this_machine_follows_its_instructions():
    _bundled_int8("efficientnet_lite0")
    est = Estimator(model="efficientnet_lite0", detector="short")
    choice = est.info()["weights"]["precision_choice"]
    if not precision.int8_instructions():
        assert choice["precision"] == "float32" == est.info()["engine"]["precision"]
        assert "float32_ms_per_view" not in choice  # no probe, no int8 session
    else:
        assert choice["precision"] == est.info()["engine"]["precision"] and choice["int8_ms_per_view"] > 0
    est.close()


def test_quantize_makes_an_int8_graph_that_agrees_with_float32(tmp_path, astronaut):
    """train.quantize on the bundled Lite0, calibrated on a few views of a real face: the graph holds int8
    convolutions, runs in the engine, and reads the face as float32 does."""
    pytest.importorskip("torch")
    import onnx

    from agegender.crops.align import crop_face
    from agegender.detection.detector import FaceDetector
    from agegender.engines.onnx_engine import OnnxEngine
    from agegender.models import AgeGenderNet, net_options
    from agegender.weights import load_state_dict
    from train.onnx_export import export_onnx_bytes
    from train.quantize import quantize, session

    name, entry = model_entry("efficientnet_lite0")
    net = AgeGenderNet(entry["backbone"], dropout=0.0, **net_options(entry))
    net.load_state_dict(load_state_dict(name), strict=True)
    fp32 = export_onnx_bytes(net, fp16_storage=False)
    size = int(entry["input_size"])
    detector = FaceDetector("short")
    (det,) = detector.detect(astronaut)
    detector.close()
    views = np.stack([crop_face(astronaut, det, size=size, context=c) for c in (0.85, 0.9, 1.0, 1.1, 1.2)])
    calibration = np.concatenate([views, views[:, :, ::-1]])
    path = quantize(fp32, calibration, tmp_path / "lite0.int8.onnx")
    graph = onnx.load(str(path)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    # The input normalisation (x * k + b per channel, before the stem) stays float32: quantized, onnxruntime ran it
    # element by element in NHWC, 40 % of the Lite0's int8 time. Its nodes read and write float tensors directly.
    first_conv = next(i for i, n in enumerate(graph.node) if n.op_type == "Conv")
    normalisation = [n for n in graph.node[:first_conv] if n.op_type in ("Mul", "Add")]
    qdq_outputs = {o for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for o in n.output}
    assert len(normalisation) == 2 and not any(i in qdq_outputs for n in normalisation for i in n.input)
    float_age, float_female = OnnxEngine(fp32, size).run(views)
    # The int8 arithmetic as VNNI/AMX kernels compute it (QDQ run unfused): the face reads as in float32, averaged
    # over its views as the app averages them.
    emulated_age, emulated_female = session(str(path), emulate=True).run(None, {"crops": views})
    bins = np.arange(float_age.shape[1])
    assert abs((emulated_age @ bins).mean() - (float_age @ bins).mean()) < 1.0
    assert abs(emulated_female.mean() - float_female.mean()) < 0.1
    # This CPU's own int8 kernels run the same graph (on AVX2 their saturation makes them less exact: not asserted).
    int8_age, _ = OnnxEngine(path.read_bytes(), size, precision="int8").run(views)
    assert int8_age.shape == float_age.shape and np.allclose(int8_age.sum(1), 1, atol=1e-3)

    # --keep-float: a named layer keeps float32 weights (no DequantizeLinear feeds it), the others stay int8.
    def weight_from_dq(graph) -> dict[str, bool]:
        made_by_dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        return {n.name: n.input[1] in made_by_dq for n in graph.node if n.op_type == "Conv"}

    quantized = weight_from_dq(onnx.load(str(path)).graph)
    stem = next(iter(quantized))
    assert quantized[stem] and all(quantized.values())
    kept = weight_from_dq(onnx.load(str(quantize(fp32, calibration, tmp_path / "kept.onnx", keep_float=[stem]))).graph)
    assert not kept[stem] and sum(kept.values()) == len(kept) - 1

    # --reduce-range: 7-bit weights (|w| ≤ 64, so AVX2's u8s8 pair sums cannot saturate int16); --weight-type
    # uint8: unsigned weights (onnxruntime's U8U8 kernels). Both are measured and not bundled (docs/performance.md).
    def conv_weights(graph) -> list[np.ndarray]:
        from onnx import numpy_helper

        inits = {t.name: t for t in graph.initializer}
        return [numpy_helper.to_array(inits[n.input[0]]) for n in graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dims
                and len(inits[n.input[0]].dims) == 4]

    full = conv_weights(graph)
    assert all(w.dtype == np.int8 for w in full) and max(np.abs(w.astype(int)).max() for w in full) > 64
    seven = conv_weights(onnx.load(str(quantize(fp32, calibration, tmp_path / "r7.onnx", reduce_range=True))).graph)
    assert len(seven) == len(full) and max(np.abs(w.astype(int)).max() for w in seven) <= 64
    unsigned = conv_weights(onnx.load(str(quantize(fp32, calibration, tmp_path / "u8.onnx",
                                                   weight_type="uint8"))).graph)
    assert len(unsigned) == len(full) and all(w.dtype == np.uint8 for w in unsigned)


@pytest.mark.parametrize("variant", [["--reduce-range"], ["--weight-type", "uint8"]])
def test_quantize_refuses_to_bundle_a_measurement_variant(variant, capsys):
    """The engine runs one int8 graph per model (for CPUs with an int8 dot product); the remedies for CPUs without
    one are measured, never registered beside it."""
    pytest.importorskip("torch")
    from train.quantize import main

    with pytest.raises(SystemExit):
        main(["--model-file", "agegender_efficientnet_lite0.safetensors", *variant, "--bundle"])
    assert "not to bundle" in capsys.readouterr().err


def test_cli_precision_option_and_info(tmp_path, astronaut):
    import json
    import subprocess
    import sys

    from PIL import Image

    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(photo)
    run = [sys.executable, "-m", "agegender"]
    info = json.loads(subprocess.run([*run, "info", "--json"], capture_output=True, text=True, check=True).stdout)
    assert info["cpu_int8_instructions"] == precision.int8_instructions()
    proc = subprocess.run([*run, "predict", str(photo), "--precision", "float32", "--detector", "short", "--json"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert len([line for line in proc.stdout.splitlines() if '"age"' in line]) == 1
    bad = subprocess.run([*run, "predict", str(photo), "--precision", "fp8"], capture_output=True, text=True)
    assert bad.returncode == 2 and "precision" in bad.stderr
