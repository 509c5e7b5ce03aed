"""int8 static quantization (QDQ) of a bundled model, and the validation that decides whether to bundle it.

    python -m train.quantize --model-file agegender_efficientnet_lite0.safetensors [--calibration 256]
        [--out artifacts/quantize] [--bundle]

1. The float32 graph (weights stored in float32: the quantizer needs them) is pre-processed with onnxruntime's
   ``quant_pre_process`` and quantized with ``quantize_static`` (QDQ, per-channel int8 weights, uint8
   activations, MinMax calibration) on crops of *training* images framed as the app frames faces.
2. The same validation crops (UTKFace val chips, All-Age-Faces val photos; default TTA: three framings, each
   mirrored) go through the float32 and the int8 graph; the combined validation MAE and gender accuracy of both,
   and their speed at batch 8, are written to ``--out/<stem>.json``.
3. ``--bundle`` copies the int8 graph into ``weights/`` and registers it only if it passes the project's rule:
   combined val MAE rises ≤ 0.03 years, gender accuracy falls ≤ 0.2 points, and it is ≥ 1.3× faster.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from agegender.crops.chips import frame_chip, main_face
from agegender.evaluation.datasets import read_split
from agegender.detection.detector import FaceDetector
from agegender.estimator import SCALE_TTA_CONTEXTS
from agegender.crops.align import crop_face
from agegender.groups import expected_age
from agegender.io.images import load_image
from agegender.models import AgeGenderNet, net_options
from agegender.paths import REPO_DIR, WEIGHTS_DIR
from agegender.weights import load_state_dict, read_manifest, register_file

from .onnx_export import INPUT_NAME, OUTPUT_NAMES, export_onnx_bytes

MAX_MAE_RISE, MAX_GENDER_DROP, MIN_SPEEDUP = 0.03, 0.002, 1.3


def face_views(path: Path, detector: FaceDetector, size: int, chip: bool) -> np.ndarray | None:
    """(3, S, S, 3) crops of the labelled face (chips framed as in training; photos: their main face)."""
    rgb = load_image(path)
    if chip:
        framed = frame_chip(rgb, detector)
        image, det = framed.image, framed.detection
    else:
        image, det = rgb, main_face(detector.detect(rgb), rgb.shape)
        if det is None:
            return None
    return np.stack([crop_face(image, det, size=size, context=c) for c in SCALE_TTA_CONTEXTS])


def split_views(split: str, size: int, detector: FaceDetector, limit: int | None = None):
    """Views, ages and genders of every sample of ``dataset:split`` (photos without a face are skipped)."""
    dataset, part = split.split(":")
    samples = read_split(dataset, part)
    if limit:
        samples = samples[:: max(1, len(samples) // limit)][:limit]
    views, ages, genders = [], [], []
    for s in samples:
        v = face_views(s.path(), detector, size, chip=dataset == "utkface")
        if v is not None:
            views.append(v)
            ages.append(s.age)
            genders.append(s.gender)
    return np.stack(views), np.array(ages, np.float64), np.array(genders)


def session(model: bytes | str, threads: int = 2):
    from agegender.engines.onnx_engine import session_options
    import onnxruntime as ort

    return ort.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"])


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


def quantize(fp32_bytes: bytes, calibration: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 16)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}

    with tempfile.TemporaryDirectory() as tmp:
        raw, prep = Path(tmp) / "fp32.onnx", Path(tmp) / "prep.onnx"
        raw.write_bytes(fp32_bytes)
        quant_pre_process(str(raw), str(prep), skip_symbolic_shape=True)
        quantize_static(str(prep), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-file", required=True, help="a bundled .safetensors name")
    parser.add_argument("--calibration", type=int, default=256, help="training faces used for calibration")
    parser.add_argument("--val-limit", type=int, default=None, help="at most this many samples per val split")
    parser.add_argument("--out", type=Path, default=REPO_DIR / "artifacts" / "quantize")
    parser.add_argument("--bundle", action="store_true", help="bundle the int8 graph if it passes the rule")
    args = parser.parse_args(argv)

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
    stem = Path(args.model_file).stem
    int8_path = quantize(fp32, calib, args.out / f"{stem}.int8.onnx")
    print(f"quantized on {len(calib)} training views in {time.time() - t0:.0f} s -> {int8_path}")
    sessions = {"float32": session(fp32), "int8": session(str(int8_path))}
    report: dict = {"model_file": args.model_file, "calibration_views": int(len(calib)), "splits": {}}
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
    rounds: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(4):
        for name, sess in sessions.items():
            rounds[name].append(ms_per_view(sess, size, repeats=7))
    for name, (err, correct, n) in totals.items():
        report[name] = {"combined_val_mae": round(err / n, 4), "combined_gender_acc": round(correct / n, 4),
                        "ms_per_view_batch8": round(statistics.median(rounds[name]), 3)}
    mae_rise = report["int8"]["combined_val_mae"] - report["float32"]["combined_val_mae"]
    gender_drop = report["float32"]["combined_gender_acc"] - report["int8"]["combined_gender_acc"]
    speedup = report["float32"]["ms_per_view_batch8"] / report["int8"]["ms_per_view_batch8"]
    report["rule"] = {"mae_rise": round(mae_rise, 4), "gender_drop": round(gender_drop, 4),
                      "speedup": round(speedup, 3),
                      "passes": bool(mae_rise <= MAX_MAE_RISE and gender_drop <= MAX_GENDER_DROP
                                     and speedup >= MIN_SPEEDUP)}
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if args.bundle and report["rule"]["passes"]:
        name = f"{stem}.int8.onnx"
        shutil.copyfile(int8_path, WEIGHTS_DIR / name)
        register_file(name, {"kind": "agegender-onnx", "backbone": entry["backbone"], "source": args.model_file,
                             "source_sha256": entry["sha256"], "input_size": size, "precision": "int8",
                             "quantization": {"format": "QDQ", "per_channel": True, **report}})
        print(f"bundled {name}")
    detector.close()


if __name__ == "__main__":
    main()
