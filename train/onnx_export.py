"""ONNX graphs of the bundled models, for the onnxruntime engine (``agegender.engines.onnx_engine``).

The graph is :class:`agegender.models.probabilities.ProbabilityModel`: uint8 NHWC crops with a dynamic batch in,
``age_probs`` (N, 101) and ``p_female`` (N,) out, opset 17, computed in float32. Its weights are *stored* as
float16, the precision of the bundled safetensors file they come from, and cast up to float32 by a ``Cast`` node
that onnxruntime folds into a float32 constant when the session is created: the graph computes exactly what the
torch engine computes from the same file, at half the size (ResNet-50 in float32 would be 94 MB, over the 50 MB
limit for bundled files).

BatchNorms are exported as BatchNormalization nodes (``TrainingMode.PRESERVE`` on an eval-mode module) rather
than fused into the convolutions by the exporter: fused weights are new float32 numbers that float16 storage
would round (measured: P(female) off by 2e-3 on a real face), while onnxruntime fuses them itself at load time,
in float32, from the exact stored values.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from agegender.models import AgeGenderNet
from agegender.models.probabilities import ProbabilityModel

OPSET = 17
INPUT_NAME = "crops"
OUTPUT_NAMES = ("age_probs", "p_female")


def export_onnx_bytes(net: AgeGenderNet, fp16_storage: bool = True) -> bytes:
    """The serialised ONNX model of ``net`` (put in eval mode here) with a dynamic batch dimension."""
    import onnx

    model = ProbabilityModel(net.eval()).eval()
    dummy = torch.zeros((2, net.input_size, net.input_size, 3), dtype=torch.uint8)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and constant-folding notes
        torch.onnx.export(model, (dummy,), buf, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in OUTPUT_NAMES}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True,
                          training=torch.onnx.TrainingMode.PRESERVE)
    proto = onnx.load_from_string(buf.getvalue())
    if fp16_storage:
        proto = store_weights_as_float16(proto)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def store_weights_as_float16(proto):
    """Replace every float32 initializer with a float16 one plus a ``Cast`` back to float32 (see module doc);
    one with values past float16's range stays float32."""
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims, dtype=np.int64)) < 16:
            kept.append(init)  # scalars and shape constants stay as they are
            continue
        values = numpy_helper.to_array(init)
        if np.abs(values).max() > np.finfo(np.float16).max:  # would be inf (see train.export.to_fp16)
            kept.append(init)
            continue
        half = numpy_helper.from_array(values.astype(np.float16), name=f"{init.name}__fp16")
        kept.append(half)
        casts.append(onnx.helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                           name=f"{init.name}__cast"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return proto


def write_onnx(net: AgeGenderNet, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(export_onnx_bytes(net))
    tmp.replace(path)
    path.chmod(0o644)
    return path


def max_probability_difference(net: AgeGenderNet, onnx_bytes: bytes, crops: np.ndarray) -> float:
    """max |Δ| between the torch and onnxruntime probabilities on ``crops`` (uint8 NHWC)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref = ProbabilityModel(net.eval())(torch.from_numpy(crops))
    got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: crops})
    return float(max(np.abs(r.numpy() - g).max() for r, g in zip(ref, got)))


def check_crops(size: int, n: int = 8) -> np.ndarray:
    """Deterministic uint8 crops for the export check: smooth gradients and noise (real faces are in the tests)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    smooth = [np.stack([xx, yy, 1 - xx * yy], -1) * 255 * rng.uniform(0.3, 1.0) for _ in range(n // 2)]
    noise = [rng.integers(0, 256, (size, size, 3)) for _ in range(n - n // 2)]
    return np.clip(np.stack(smooth + noise), 0, 255).astype(np.uint8)
