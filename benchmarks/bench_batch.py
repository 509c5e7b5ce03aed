"""Batch inference on Ray Data against ``agegender predict`` on the same folder, in one run.

    python benchmarks/bench_batch.py --images 500 --out artifacts/bench_batch.json

The folder: the group photos and UTKFace chips (links into ``AGEGENDER_DATA``, deterministic choice). Measured, in
this order, ``--repeats`` times interleaved (medians reported): the CLI with its defaults (every core of the machine), the CLI on one core (``AGEGENDER_CORES=1``: the
like-for-like baseline of one Ray worker), then ``run_batch`` with 1 and 2 workers on a local Ray started once
before them (its start-up is timed on its own: a cluster that is already running does not pay it). Each Ray row's
wall time includes starting the actors and loading their models. Peak memory per worker is sampled from the
worker processes (psutil, every 0.2 s). Prints a Markdown table and the projection for 10^6 photos; ``--load N``
adds a pass with N busy processes (``benchmarks/load.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def build_folder(data: Path, n: int, folder: Path) -> dict[str, int]:
    photos = sorted((data / "group_photos").rglob("*.jpg"))
    chips = sorted((data / "utkface" / "images").glob("*.jpg"))
    need = max(0, n - len(photos))
    step = max(1, len(chips) // max(1, need))
    chosen = chips[::step][:need]
    for src in [*photos, *chosen]:
        os.symlink(src.resolve(), folder / f"{src.parent.name}__{src.name}")
    return {"group_photos": len(photos), "chips": len(chosen)}


class WorkerMemory:
    """Peak RSS of each Ray worker process running our actors (sampled)."""

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "WorkerMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if "FacePredictor" in cmd and proc.info["memory_info"] is not None:
                    rss = proc.info["memory_info"].rss / 2**20
                    self.peaks[proc.info["pid"]] = max(self.peaks.get(proc.info["pid"], 0.0), rss)


def time_cli(folder: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "agegender", "predict", str(folder), "--csv"], cwd=REPO,
                          env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"agegender predict failed: {proc.stderr[-1000:]}")
    return time.perf_counter() - started


def time_ray(folder: Path, workers: int, out_root: Path) -> tuple[float, dict]:
    from agegender.distributed.batch import run_batch

    with WorkerMemory() as memory:
        summary = run_batch(str(folder), out_root / f"w{workers}", workers=workers, overwrite=True)
    peaks = sorted(memory.peaks.values(), reverse=True)[:workers]
    return summary.seconds, {"rows": summary.rows, "peak_rss_mb_per_worker": [round(p) for p in peaks]}


def one_pass(folder: Path, images: int, load: int, out_root: Path, repeats: int) -> list[dict]:
    """Each run ``repeats`` times, interleaved (a slow minute of a shared CPU hits every run alike); the median."""
    one_core = {"AGEGENDER_CORES": "1", "AGEGENDER_THREADS": "1", "OMP_NUM_THREADS": "1"}
    runs = {"agegender predict (2 cores, default)": lambda: (time_cli(folder, {}), {}),
            "agegender predict (1 core)": lambda: (time_cli(folder, one_core), {}),
            "agegender batch, 1 worker": lambda: time_ray(folder, 1, out_root),
            "agegender batch, 2 workers": lambda: time_ray(folder, 2, out_root)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    extras: dict[str, dict] = {}
    loads: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            loads[name].append(os.getloadavg()[0])
            seconds, extras[name] = run()
            times[name].append(seconds)
            print(f"  {name}: {seconds:.1f} s, {images / seconds:.1f} images/s", file=sys.stderr, flush=True)
    rows = []
    for name in runs:
        seconds = statistics.median(times[name])
        rows.append({"run": name, "load": load, "loadavg_1m": round(statistics.median(loads[name]), 2),
                     "seconds": round(seconds, 2), "all_seconds": [round(t, 2) for t in times[name]],
                     "images_per_s": round(images / seconds, 2), **extras[name]})
    return rows


def summarise(rows: list[dict], images: int) -> dict:
    by = {r["run"]: r for r in rows}
    cli1, cli2 = by["agegender predict (1 core)"], by["agegender predict (2 cores, default)"]
    ray1, ray2 = by["agegender batch, 1 worker"], by["agegender batch, 2 workers"]
    per_core = ray2["images_per_s"] / 2
    return {
        "speedup_2_vs_1_worker": round(ray2["images_per_s"] / ray1["images_per_s"], 3),
        "scaling_efficiency_2_workers": round(ray2["images_per_s"] / (2 * ray1["images_per_s"]), 3),
        "ray_1_worker_overhead_vs_cli_1_core": round(ray1["seconds"] / cli1["seconds"] - 1, 3),
        "ray_2_workers_vs_cli_default": round(ray2["seconds"] / cli2["seconds"], 3),
        "projection_1e6": {f"{cores} cores": f"10^6 / ({per_core:.2f} images/s per core × {cores}) = "
                                             f"{1e6 / (per_core * cores) / 3600:.1f} h"
                           for cores in (2, 16, 64, 256)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each row, interleaved; the median is reported")
    parser.add_argument("--load", type=int, default=0, help="busy processes for a second, loaded pass (0: idle only)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("AGEGENDER_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench_batch.json")
    args = parser.parse_args(argv)

    import ray

    from agegender.distributed.batch import _init_ray

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    folder = work / "in"
    folder.mkdir()
    made = build_folder(args.data, args.images, folder)
    images = sum(made.values())
    started = time.perf_counter()
    _init_ray(None, 2)
    ray_start = time.perf_counter() - started
    print(f"{images} images ({made}); local Ray started in {ray_start:.1f} s", file=sys.stderr)
    result = {"cpu": platform.processor() or platform.machine(), "cpu_model": _cpu_model(), "images": images,
              "folder": made, "ray_start_s": round(ray_start, 2), "rows": []}
    try:
        result["rows"] += one_pass(folder, images, 0, work, args.repeats)
        result["idle"] = summarise(result["rows"], images)
        if args.load:
            from load import busy_load

            with busy_load(args.load):
                loaded = one_pass(folder, images, args.load, work, args.repeats)
            result["rows"] += loaded
            result["loaded"] = summarise(loaded, images)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def markdown(result: dict) -> str:
    lines = [f"{result['images']} images ({result['folder']}) on {result['cpu_model']}, "
             f"local Ray start {result['ray_start_s']} s (not in the rows)", "",
             "| run | load | load avg | s | images/s | peak RSS per worker (MB) |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['run']} | {r['load']} | {r['loadavg_1m']} | {r['seconds']} | {r['images_per_s']} | "
                     f"{', '.join(map(str, r.get('peak_rss_mb_per_worker', []))) or '–'} |")
    for key in ("idle", "loaded"):
        if key in result:
            lines += ["", f"{key}: " + json.dumps(result[key], indent=1)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
