"""The browser half of ``bench_app.py``: ``streamlit run`` with headless Chromium (Debian's, through Playwright):
first page, uploads, the live camera on Chromium's fake camera, the server's memory. Also the small helpers both
halves use."""

from __future__ import annotations

import io
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from app.live import write_y4m  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--use-fake-device-for-media-stream",
                 "--use-fake-ui-for-media-stream"]
CARD = '[class*="st-key-facecard-"]'


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
