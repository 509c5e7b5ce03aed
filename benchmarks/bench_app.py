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
import io
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from app.live import write_y4m  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from load import busy_load  # noqa: E402
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--use-fake-device-for-media-stream",
                 "--use-fake-ui-for-media-stream"]
CARD = '[class*="st-key-facecard-"]'


def mosaic() -> np.ndarray:
    from skimage import data

    cell = cv2.resize(data.astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.vstack([np.hstack([cell] * 5)] * 2))


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def variant(rgb: np.ndarray, i: int) -> np.ndarray:
    """The same picture with one pixel changed: another content hash, so the app's cache misses."""
    out = rgb.copy()
    out[0, 0, 0] = (int(out[0, 0, 0]) + 1 + i) % 256
    return out


def median_s(values: list[float]) -> float:
    return statistics.median(values)


def peak_rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


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


# ------------------------------------------------------------------------------------------------ browser
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url, started
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("streamlit did not start")


def browser_runs(img: np.ndarray, repeats: int, camera_seconds: float, tmp: Path) -> dict[str, float]:
    from playwright.sync_api import sync_playwright
    from skimage import data

    write_y4m(cv2.resize(data.astronaut(), (640, 480)), tmp / "astro.y4m", frames=30, fps=30)
    files = [{"name": f"mosaic{i}.png", "mimeType": "image/png", "buffer": png(variant(img, 50 + i))}
             for i in range(repeats + 1)]  # handed to the browser from memory
    proc, url, started = start_server()
    out: dict[str, float] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=CHROMIUM_ARGS + [f"--use-file-for-fake-video-capture={tmp / 'astro.y4m'}"])
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
            page = ctx.new_page()
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_role("heading", name="agegender").first.wait_for()
            out["first_page_s"] = time.perf_counter() - started
            group = Path(os.environ.get("AGEGENDER_DATA", REPO.parent / "shared" / "data")) / "group_photos" / \
                "dlib_examples_faces" / "bald_guys.jpg"
            if group.is_file():
                firsts, alls = [], []
                for i in range(max(2, repeats // 2) + 1):
                    payload = {"name": f"bald_guys{i}.png", "mimeType": "image/png",
                               "buffer": png(variant(cv2.cvtColor(cv2.imread(str(group)), cv2.COLOR_BGR2RGB), i))}
                    page.goto(f"{url}/Upload_photos")
                    page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")
                    t0 = time.perf_counter()
                    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(payload)
                    page.locator(CARD).first.wait_for()
                    first = time.perf_counter() - t0
                    page.get_by_text("Done:").wait_for()
                    if i > 0:
                        firsts.append(first)
                        alls.append(time.perf_counter() - t0)
                out["group_first_card_s"], out["group_all_cards_s"] = median_s(firsts), median_s(alls)
                out["group_cards"] = page.locator(CARD).count()
            times = []
            for i, payload in enumerate(files):
                page.goto(f"{url}/Upload_photos")
                page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")
                t0 = time.perf_counter()
                page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(payload)
                page.locator(CARD).nth(9).wait_for()
                page.get_by_text("All faces", exact=True).wait_for()
                if i > 0:  # the first one warms up the server (model load)
                    times.append(time.perf_counter() - t0)
                out["browser_cards"] = page.locator(CARD).count()
            out["browser_upload_s"] = median_s(times)

            page.goto(f"{url}/Live_camera")
            frame = page.frame_locator('iframe[title="streamlit_webrtc.component.webrtc_streamer"]')
            frame.get_by_role("button", name="START").click()
            metric = lambda label: page.locator('[data-testid="stMetric"]').filter(has_text=label).locator(  # noqa: E731
                '[data-testid="stMetricValue"]')
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and metric("Video FPS").inner_text().strip() in ("–", "0.0"):
                time.sleep(0.5)
            time.sleep(3)  # warm-up
            fps, analysed, latency = [], [], []
            end = time.monotonic() + camera_seconds
            while time.monotonic() < end:
                time.sleep(1.0)
                try:
                    fps.append(float(metric("Video FPS").inner_text()))
                    analysed.append(float(metric("Analysed FPS").inner_text()))
                    latency.append(float(metric("Latency per analysed frame").inner_text().split()[0]))
                except ValueError:
                    pass
            out["camera_fps"] = median_s(fps) if fps else float("nan")
            out["camera_analysed_fps"] = median_s(analysed) if analysed else float("nan")
            out["camera_latency_ms"] = median_s(latency) if latency else float("nan")
            frame.get_by_role("button", name="STOP").click()
            browser.close()
        out["server_peak_rss_mb"] = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)
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
          f"CPU cores: {os.cpu_count()}; load N = {args.load} busy processes")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
