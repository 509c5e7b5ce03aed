"""int8 static quantization (QDQ) of a bundled model, and the validation that decides whether to bundle it.

    python -m train.quantize --model-file agegender_efficientnet_lite0.safetensors [--calibration 256]
        [--keep-float PREFIX ...] [--method minmax|percentile|entropy] [--reduce-range] [--weight-type uint8]
        [--out artifacts/quantize] [--bundle]

1. The float32 graph (weights stored in float32: the quantizer needs them) is pre-processed with onnxruntime's
   ``quant_pre_process`` and quantized with ``quantize_static`` (QDQ, per-channel int8 weights, uint8
   activations; MinMax calibration unless ``--method`` says otherwise) on crops of *training* images framed as the
   app frames faces. The heads and the input normalisation stay float32 (see :func:`input_normalisation`).
   Bundled (session 20): the Lite0 with ``--keep-float /net/_conv_stem/``, the ResNet-50 with ``--method
   percentile --calibration 64`` (the default 256 faces need more than 24 GB for percentile histograms).
2. The same validation crops (UTKFace val chips, All-Age-Faces val photos; default TTA: three framings, each
   mirrored) go through the float32 and the int8 graph; the combined validation MAE and gender accuracy of both,
   and their speed at batch 8, are written to ``--out/<stem>.json``.
3. ``--bundle`` copies the int8 graph into ``weights/`` and registers it only if it passes the project's
   accuracy rule: combined val MAE rises ≤ 0.03 years and gender accuracy falls ≤ 0.2 points. Speed is not part
   of the rule because it depends on the CPU, not on the graph; ``precision="auto"`` decides it on each machine
   (:mod:`agegender.engines.precision`); the speed measured here is recorded with the CPU it came from.

Accuracy is measured three ways: float32, int8 on this CPU's kernels, and int8 *emulated* (the QDQ graph run
unfused: what the VNNI/AMX kernels compute). On a CPU without VNNI the two int8 figures differ: onnxruntime's
u8s8 kernels there (``VPMADDUBSW``) saturate their int16 pair sums, which VNNI's ``VPDPBUSD`` does not. Since
``precision="auto"`` only ever runs int8 on CPUs with VNNI, AMX or Arm's dot product, the rule reads the emulated
figure on other CPUs and this CPU's own figure where it has such an instruction. onnxruntime's two remedies for
CPUs without VNNI, ``--reduce-range`` and ``--weight-type uint8``, were measured on an AVX2 EPYC in session 24
(docs/performance.md) and are not bundled: the first costs accuracy, the second speed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from agegender.detection.detector import FaceDetector
from agegender.groups import expected_age
from agegender.engines.precision import int8_instructions
from agegender.models import AgeGenderNet, net_options
from agegender.paths import REPO_DIR, WEIGHTS_DIR
from agegender.weights import load_state_dict, onnx_entry, read_manifest, register_file

from .onnx_export import INPUT_NAME, OUTPUT_NAMES, export_onnx_bytes
from .validation_views import cpu_name, split_views

MAX_MAE_RISE, MAX_GENDER_DROP = 0.03, 0.002
CALIBRATION_METHODS = {"minmax": lambda m: m.MinMax, "percentile": lambda m: m.Percentile,
                       "entropy": lambda m: m.Entropy}


def session(model: bytes | str, threads: int = 2, emulate: bool = False):
    """An onnxruntime session; ``emulate`` runs a QDQ graph unfused (quantize, dequantize, float convolution):
    the int8 model's arithmetic without the integer kernels, i.e. what the VNNI/AMX kernels compute, whose int32
    accumulation is exact, where AVX2's ``VPMADDUBSW`` saturates its int16 pair sums."""
    from agegender.engines.onnx_engine import session_options
    import onnxruntime as ort

    options = session_options(threads)
    if emulate:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def tta_predict(sess, views: np.ndarray, batch: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Default-TTA probabilities: every view and its mirror, averaged (as ``Estimator.predict_batch``)."""
    n, v = views.shape[:2]
    flat = views.reshape(n * v, *views.shape[2:])
    flat = np.concatenate([flat, flat[:, :, ::-1]])
    age, female = [], []
    for i in range(0, len(flat), batch):
        a, f = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(flat[i:i + batch])})
        age.append(a)
        female.append(f)
    age_probs = np.concatenate(age).reshape(2, n, v, -1).mean((0, 2))
    p_female = np.concatenate(female).reshape(2, n, v).mean((0, 2))
    return age_probs, p_female


def ms_per_view(sess, size: int, batch: int = 8, repeats: int = 15) -> float:
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    for _ in range(3):
        sess.run(None, {INPUT_NAME: x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {INPUT_NAME: x})
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000 / batch


def quantize(fp32_bytes: bytes, calibration: np.ndarray, out: Path, keep_float: Sequence[str] = (),
             method: str = "minmax", reduce_range: bool = False, weight_type: str = "int8") -> Path:
    """QDQ int8 graph of ``fp32_bytes`` at ``out``; nodes whose names start with one of ``keep_float`` (e.g.
    ``/net/layer4/``) stay float32 besides the heads, for a model whose accuracy needs some layers at full precision.
    ``method`` is onnxruntime's activation-range calibration: ``minmax`` (the observed range), ``percentile``
    (99.999 % of it: a rare outlier no longer widens the 8-bit step of every other value) or ``entropy``.
    ``reduce_range``: 7-bit weights (onnxruntime's remedy for CPUs without VNNI): with |w| ≤ 64 and uint8
    activations, a pair sum of ``VPMADDUBSW`` stays within int16 (2 · 255 · 64 < 32768), so AVX2's u8s8 kernels no
    longer saturate; the price is half the weight resolution. ``weight_type`` ``uint8`` (with uint8 activations:
    onnxruntime's U8U8 kernels) is its other remedy: no saturation at full resolution, on slower kernels."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 16)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        raw, folded, prep = Path(tmp) / "fp32.onnx", Path(tmp) / "folded.onnx", Path(tmp) / "prep.onnx"
        raw.write_bytes(fp32_bytes)
        # Fold BatchNorms into the convolutions and the constant subgraphs first (onnxruntime's basic level):
        # quantized as they are exported, every BatchNorm output would be rounded to 8 bits a second time per
        # layer — measured on the astronaut's views, that alone moved Lite0's expected age by up to 6 years.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
        quant_pre_process(str(folded), str(prep), skip_optimization=True, skip_symbolic_shape=True)
        # The heads stay float: their outputs are a 101-bin softmax and a sigmoid, and 8-bit logits or
        # probabilities move the expected age by years; they are two small matrix products, so int8 saves nothing.
        graph = onnx.load(str(prep)).graph
        heads = [node.name for node in graph.node if node.op_type in ("Gemm", "MatMul", "Softmax", "Sigmoid")
                 or any(node.name.startswith(prefix) for prefix in keep_float)]
        heads += input_normalisation(graph)
        quantize_static(str(prep), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        nodes_to_exclude=heads, calibrate_method=CALIBRATION_METHODS[method](CalibrationMethod),
                        activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QUInt8 if weight_type == "uint8" else QuantType.QInt8,
                        reduce_range=reduce_range)
    return out


def input_normalisation(graph) -> list[str]:
    """The nodes between the uint8 input and the first convolution (layout, cast, ``x * k + b`` per channel):
    they stay float32.

    Why: quantized, they become ``QLinearMul``/``QLinearAdd`` with a per-channel constant, and onnxruntime's
    int8 layout pass moves them behind its NHWC transpose, where the constant broadcasts over the last axis of
    size 3 — element by element. Profiled on the Intel Xeon with AMX (single thread, batch 8), those two nodes took
    40 % of the Lite0's int8 time (22 % + 19 %) and 14 % of the ResNet-50's. In float32 they cost ~1 %, and the
    input is already exact 8-bit data, so quantizing them saved nothing and rounded the normalised input again."""
    names = []
    for node in graph.node:  # ONNX graphs are stored in topological order
        if node.op_type == "Conv":
            break
        names.append(node.name)
    return names


def int8_entry(model_file: str, report: dict) -> dict:
    """The manifest entry of an int8 graph: the float32 graph's (opset, input, outputs, licence) with the int8
    precision and how it was quantized and validated."""
    float32 = onnx_entry(model_file)
    if float32 is None:
        raise SystemExit(f"{model_file} has no bundled float32 graph: export it first (python -m train.export)")
    source = read_manifest()["files"][model_file]
    keep = ("backbone", "source", "source_sha256", "input_size", "opset", "input", "outputs", "license")
    return {"kind": "agegender-onnx", **{k: float32[1][k] for k in keep if k in float32[1]},
            "source_sha256": source["sha256"], "precision": "int8",
            "weights_storage": "int8 per-channel weights, uint8 activations (QDQ); the heads stay float32",
            "description": f"int8 ONNX graph of {model_file}; precision='auto' runs it only on CPUs with VNNI, AMX "
                           "or Arm dotprod where a start-up probe finds it faster",
            "quantization": {"format": "QDQ", "per_channel": True, **report}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-file", required=True, help="a bundled .safetensors name")
    parser.add_argument("--calibration", type=int, default=256, help="training faces used for calibration")
    parser.add_argument("--val-limit", type=int, default=None, help="at most this many samples per val split")
    parser.add_argument("--out", type=Path, default=REPO_DIR / "artifacts" / "quantize")
    parser.add_argument("--bundle", action="store_true", help="bundle the int8 graph if it passes the rule")
    parser.add_argument("--keep-float", nargs="*", default=[], metavar="PREFIX",
                        help="node-name prefixes that stay float32 as well as the heads, e.g. /net/layer4/")
    parser.add_argument("--method", choices=sorted(CALIBRATION_METHODS), default="minmax",
                        help="activation-range calibration (default: minmax)")
    parser.add_argument("--reduce-range", action="store_true",
                        help="7-bit weights: no int16 saturation in AVX2's u8s8 kernels (CPUs without VNNI)")
    parser.add_argument("--weight-type", choices=("int8", "uint8"), default="int8",
                        help="uint8: onnxruntime's U8U8 kernels, which do not saturate on CPUs without VNNI")
    args = parser.parse_args(argv)
    if args.bundle and (args.reduce_range or args.weight_type != "int8"):  # one int8 graph per model, for VNNI/AMX
        parser.error("--reduce-range and --weight-type uint8 make graphs to measure, not to bundle")

    entry = read_manifest()["files"][args.model_file]
    size = int(entry["input_size"])
    net = AgeGenderNet(entry["backbone"], dropout=0.0, **net_options(entry))
    net.load_state_dict(load_state_dict(args.model_file), strict=True)
    fp32 = export_onnx_bytes(net, fp16_storage=False)
    detector = FaceDetector("auto")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    calib = np.concatenate([split_views("utkface:train", size, detector, args.calibration * 3 // 4)[0],
                            split_views("all_age_faces:train", size, detector, args.calibration // 4)[0]])
    calib = calib.reshape(-1, size, size, 3)
    calib = np.concatenate([calib, calib[:, :, ::-1]])  # the mirrors the engine sees too
    stem = (Path(args.model_file).stem + (".reduce-range" if args.reduce_range else "")
            + (".u8u8" if args.weight_type == "uint8" else ""))
    int8_path = quantize(fp32, calib, args.out / f"{stem}.int8.onnx", args.keep_float, args.method,
                         args.reduce_range, args.weight_type)
    print(f"quantized on {len(calib)} training views in {time.time() - t0:.0f} s -> {int8_path}")
    sessions = {"float32": session(fp32), "int8": session(str(int8_path)),
                "int8_emulated": session(str(int8_path), emulate=True)}
    report: dict = {"model_file": args.model_file, "calibration_views": int(len(calib)),
                    "kept_float": ["input normalisation", "heads", *args.keep_float],
                    "calibration_method": args.method, "reduce_range": args.reduce_range,
                    "weight_type": args.weight_type, "splits": {}}
    totals = {k: [0.0, 0.0, 0] for k in sessions}  # |error| sum, correct genders, n
    for split in ("utkface:val", "all_age_faces:val"):
        views, ages, genders = split_views(split, size, detector, args.val_limit)
        report["splits"][split] = {"n": int(len(ages))}
        for name, sess in sessions.items():
            age_probs, p_female = tta_predict(sess, views)
            err = np.abs(expected_age(age_probs) - ages)
            correct = ((p_female >= 0.5).astype(int) == genders)
            report["splits"][split][name] = {"mae": round(float(err.mean()), 4),
                                             "gender_acc": round(float(correct.mean()), 4)}
            totals[name][0] += float(err.sum())
            totals[name][1] += float(correct.sum())
            totals[name][2] += len(ages)
    # Speed: the two graphs timed in alternation (4 rounds, median), so both see the same machine load.
    rounds: dict[str, list[float]] = {name: [] for name in list(sessions)[:2]}
    for _ in range(4):
        for name, sess in list(sessions.items())[:2]:
            rounds[name].append(ms_per_view(sess, size, repeats=7))
    for name, (err, correct, n) in totals.items():
        report[name] = {"combined_val_mae": round(err / n, 4), "combined_gender_acc": round(correct / n, 4)}
        if rounds.get(name):
            report[name]["ms_per_view_batch8"] = round(statistics.median(rounds[name]), 3)
    # The rule reads the emulated figures: precision="auto" only runs int8 on CPUs with VNNI, AMX or Arm's
    # dot product, whose kernels compute what the emulation does; this CPU's own int8 figures are reported too.
    judged = "int8" if int8_instructions() else "int8_emulated"
    mae_rise = report[judged]["combined_val_mae"] - report["float32"]["combined_val_mae"]
    gender_drop = report["float32"]["combined_gender_acc"] - report[judged]["combined_gender_acc"]
    speedup = report["float32"]["ms_per_view_batch8"] / report["int8"]["ms_per_view_batch8"]
    report["speed"] = {"speedup": round(speedup, 3), "cpu": cpu_name(),
                       "int8_instructions": int8_instructions()}
    report["rule"] = {"judged": judged, "mae_rise": round(mae_rise, 4), "gender_drop": round(gender_drop, 4),
                      "passes": bool(mae_rise <= MAX_MAE_RISE and gender_drop <= MAX_GENDER_DROP)}
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if args.bundle and report["rule"]["passes"]:
        name = f"{stem}.int8.onnx"
        shutil.copyfile(int8_path, WEIGHTS_DIR / name)
        register_file(name, int8_entry(args.model_file, report))
        print(f"bundled {name}")
    detector.close()


if __name__ == "__main__":
    main()
