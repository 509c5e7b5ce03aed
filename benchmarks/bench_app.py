"""Benchmark of the Streamlit app (not a test): what a user waits for, against the library doing the same work.

    python benchmarks/bench_app.py [--load 2] [--repeats 5] [--no-browser] [--camera-seconds 15]

Every measurement runs with the CPU as it is and again with ``--load N`` busy processes of the benchmark's own
(benchmarks/load.py); each row says which, with the load average.

Measures, on one ~10-face photo (a 2 x 5 mosaic of the astronaut, so no dataset is needed):

* library baseline: ``Estimator.predict`` on the decoded image (same model, detector and score as the app);
* AppTest: upload → all cards rendered (new file content each time, so the result cache does not help), and
  a rerun with another age-group preset (the cache does help: no model call);
* browser: ``streamlit run`` + headless Chromium, file chosen → last card visible (needs /usr/bin/chromium and
  playwright);
* first page: ``streamlit run`` started → the home page's title rendered in the browser;
* group photo: ``bald_guys.jpg`` (24 faces, from AGEGENDER_DATA) uploaded in the browser → first card and all cards;
* live camera: Chromium's fake camera playing a 30 fps clip of the astronaut (one face), frames per second shown by
  the page and analysed per second, after a warm-up;
* memory: peak RSS of the Streamlit server process over the browser session vs. a process that only loads the
  library and predicts once.

Ratios are against the library baseline measured in the same run, so they are comparable across machines.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))
from app_browser import CHROMIUM, browser_runs, median_s, png, variant  # noqa: E402
from load import busy_load, cpu_description  # noqa: E402
def mosaic() -> np.ndarray:
    from skimage import data

    cell = cv2.resize(data.astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.vstack([np.hstack([cell] * 5)] * 2))


# ------------------------------------------------------------------------------------------------ library + AppTest
def library_estimator():
    import app.settings as ui
    from agegender import Estimator

    s = ui.default_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Estimator(s.model or ui.UNTRAINED_FALLBACK, detector=s.detector, min_score=s.min_score,
                         weights="bundled" if s.model else None)


def library_rss_mb(img_path: Path) -> float:
    """Peak RSS of a fresh process that loads the library and predicts the mosaic once."""
    code = (
        "import warnings, resource, sys; warnings.simplefilter('ignore'); sys.path.insert(0, %r)\n"
        "import app.settings as ui\nfrom agegender import Estimator\ns = ui.default_settings()\n"
        "e = Estimator(s.model or ui.UNTRAINED_FALLBACK, detector=s.detector, min_score=s.min_score, "
        "weights='bundled' if s.model else None)\n"
        "e.predict(%r)\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)\n"
    ) % (str(REPO), str(img_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def in_thread(fn, *args):
    """Run ``fn`` in a fresh thread and return its result. Streamlit runs page scripts in worker threads, and
    PyTorch's CPU thread pool behaves differently there than in the main thread (on a busy machine the
    main thread's OpenMP team can be many times slower), so the baseline is timed the way the app runs."""
    box: list = []
    t = threading.Thread(target=lambda: box.append(fn(*args)))
    t.start()
    t.join()
    return box[0]


def timed_predict(est, encoded: bytes) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = len(est.predict(encoded))  # decode + detect + model, as the app does per file
    return time.perf_counter() - t0, n


def library_and_apptest(img: np.ndarray, repeats: int) -> dict[str, float]:
    """Library predict and AppTest upload interleaved on the same inputs, so both see the same machine load
    (a training job may share the CPU); the app's own Estimator is a separate, cached instance."""
    from streamlit.testing.v1 import AppTest

    est = library_estimator()
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/1_Upload_photos.py").run()
    est.predict(png(variant(img, 99)))  # warm-up both
    at.file_uploader[0].set_value(("warmup.png", png(variant(img, 99)), "image/png"))
    at.run()
    lib, upload, rerun = [], [], []
    out: dict[str, float] = {}
    for i in range(repeats):
        encoded = png(variant(img, i))
        seconds, out["faces"] = in_thread(timed_predict, est, encoded)
        lib.append(seconds)
        at.file_uploader[0].set_value((f"mosaic{i}.png", encoded, "image/png"))
        t0 = time.perf_counter()
        at.run()
        upload.append(time.perf_counter() - t0)
        assert not at.exception, at.exception
        out["cards"] = sum(1 for m in at.markdown if m.value.startswith("**Face "))
        t0 = time.perf_counter()
        at.selectbox(key="_w_preset").set_value("life4" if i % 2 == 0 else "fairface9").run()
        rerun.append(time.perf_counter() - t0)
    est.close()
    out.update(library_s=median_s(lib), upload_s=median_s(upload),
               rerun_s=median_s(rerun))
    return out


def measure(img: np.ndarray, args, load: int) -> list[tuple]:
    """Every row of the table for one load level."""
    m = library_and_apptest(img, args.repeats)
    base_s, n_faces, n_cards, up_s, rerun_s = m["library_s"], m["faces"], m["cards"], m["upload_s"], m["rerun_s"]
    la = f"{os.getloadavg()[0]:.1f}"
    rows = [
        (load, la, "library Estimator.predict (PNG bytes → faces)", f"{base_s * 1000:.0f} ms", "1.00",
         f"{n_faces} faces, in a worker thread like the app"),
        (load, la, "AppTest upload → cards", f"{up_s * 1000:.0f} ms", f"{up_s / base_s:.2f}", f"{n_cards} cards"),
        (load, la, "AppTest preset change (cached, no model)", f"{rerun_s * 1000:.0f} ms", f"{rerun_s / base_s:.2f}",
         ""),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        img_path = Path(tmp) / "mosaic.png"
        img_path.write_bytes(png(img))
        lib_rss = library_rss_mb(img_path)
        if args.no_browser:
            note = "skipped (--no-browser)"
        elif not Path(CHROMIUM).is_file():
            note = f"skipped ({CHROMIUM} missing)"
        else:
            try:
                b = browser_runs(img, args.repeats, args.camera_seconds, Path(tmp))
                note = ""
            except ImportError:
                b, note = {}, "skipped (playwright not installed)"
        la = f"{os.getloadavg()[0]:.1f}"
        if not note:
            rows += [
                (load, la, "streamlit run → first page rendered", f"{b['first_page_s']:.2f} s", "", "browser"),
                (load, la, "browser upload → last card visible", f"{b['browser_upload_s'] * 1000:.0f} ms",
                 f"{b['browser_upload_s'] / base_s:.2f}", f"{b['browser_cards']} cards"),
            ]
            if "group_first_card_s" in b:
                rows += [(load, la, "bald_guys.jpg upload → first card", f"{b['group_first_card_s']:.2f} s", "",
                          f"{b['group_cards']} cards"),
                         (load, la, "bald_guys.jpg upload → all cards", f"{b['group_all_cards_s']:.2f} s", "", "")]
            rows += [
                (load, la, "live camera, video FPS (1 face, 640×480)", f"{b['camera_fps']:.1f}", "",
                 "fake camera, 30 fps source"),
                (load, la, "live camera, analysed FPS", f"{b['camera_analysed_fps']:.1f}", "", ""),
                (load, la, "live camera, latency per analysed frame", f"{b['camera_latency_ms']:.0f} ms", "", ""),
                (load, la, "peak RSS, Streamlit server (1 session)", f"{b['server_peak_rss_mb']:.0f} MB",
                 f"{b['server_peak_rss_mb'] / lib_rss:.2f}", f"library process: {lib_rss:.0f} MB"),
            ]
        else:
            rows.append((load, la, "browser and camera", note, "", ""))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--camera-seconds", type=float, default=15.0)
    parser.add_argument("--load", type=int, default=2, help="busy processes for the loaded pass (0: idle only)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    img = mosaic()
    rows = []
    for load in sorted({0, args.load}):
        with busy_load(load):
            rows += measure(img, args, load)
    header = ("load", "loadavg", "measure", "value", "× library", "note")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    print(f"\nimage: 2 x 5 astronaut mosaic, 1600x640 px; repeats: {args.repeats} (medians); "
          f"CPU: {cpu_description()}, {os.cpu_count()} cores; load N = {args.load} busy processes")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
