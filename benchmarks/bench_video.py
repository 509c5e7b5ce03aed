"""Speed and peak memory of the video pipeline (what the Video file page runs) on a synthetic 720p clip.

    python benchmarks/bench_video.py --seconds 10 --every 5           # the library call
    python benchmarks/bench_video.py --seconds 10 --page              # the page in AppTest: upload, Analyse

The clip (made in memory, never written to disk): two astronauts (400 px and 240 px) moving across a 1280x720
frame at 30 frames/s, H.264. The analysis is ``agegender.video.analysis.analyse_video`` with the page's settings (bundled
default model, auto detector, no scale TTA, annotated MP4 into memory). Prints analysed frames/s, decoded
frames/s and the process's peak RSS (``ru_maxrss``) before and after, as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import time
from fractions import Fraction

import av
import cv2
import numpy as np
from skimage import data


def make_clip(seconds: float, fps: int = 30, width: int = 1280, height: int = 720) -> bytes:
    big = cv2.resize(data.astronaut(), (400, 400), interpolation=cv2.INTER_AREA)
    small = cv2.resize(data.astronaut(), (240, 240), interpolation=cv2.INTER_AREA)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps), options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            t = i / fps
            img = np.full((height, width, 3), 100, np.uint8)
            x = int((width - 400) * (0.5 + 0.5 * math.sin(2 * math.pi * t / 8)))
            img[60:460, x:x + 400] = big
            y = int(200 + 150 * math.sin(2 * math.pi * t / 5))
            xs = width - 260 if x < width / 2 - 200 else 20
            img[y:y + 240, xs:xs + 240] = small
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_page(clip: bytes) -> dict:
    """The Video file page through AppTest (default settings, every 5th frame): upload, then time Analyse."""
    import sys
    from pathlib import Path

    import streamlit_webrtc.component
    from streamlit.testing.v1 import AppTest

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    streamlit_webrtc.component.get_this_session_info = lambda: None  # AppTest has no session for webrtc
    at = AppTest.from_file(str(repo / "streamlit_app.py"), default_timeout=900)
    at.run()
    at.switch_page("pages/5_Video_file.py").run()
    at.file_uploader(key="video_file").set_value(("clip720.mp4", clip, "video/mp4"))
    at.run()
    before = peak_rss_mb()
    started = time.perf_counter()
    at.button(key="video_analyse").click().run()
    if at.exception:
        raise RuntimeError(at.exception)
    return {"page_wall_s": round(time.perf_counter() - started, 1), **{m.label: m.value for m in at.metric},
            "peak_rss_mb_before": round(before), "peak_rss_mb_after": round(peak_rss_mb())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--page", action="store_true", help="time the Streamlit page (AppTest) instead")
    args = parser.parse_args()
    if args.page:
        out = bench_page(make_clip(args.seconds))
        print(json.dumps({**out, "clip_s": args.seconds, "load_avg": os.getloadavg()}, indent=1))
        return

    from agegender import Estimator
    from agegender.video.analysis import VideoLimits, analyse_video

    clip = make_clip(args.seconds)
    estimator = Estimator()
    estimator.predict(data.astronaut(), scale_tta=False)  # warm-up: load the detectors and the network
    before = peak_rss_mb()
    started = time.perf_counter()
    result = analyse_video(clip, estimator, every=args.every, limits=VideoLimits(max_duration_s=3600), annotate=True)
    wall = time.perf_counter() - started
    print(json.dumps({
        "clip": f"1280x720, {args.seconds:g} s, 30 fps, {len(clip) / 2**20:.1f} MB H.264", "every": args.every,
        "frames": result.frames, "frames_analysed": result.frames_analysed, "tracks": len(result.tracks), "people": len(result.people()),
        "wall_s": round(wall, 2), "analysed_fps": round(result.frames_analysed / wall, 2),
        "decoded_fps": round(result.frames / wall, 2), "annotated_mb": round(len(result.annotated) / 2**20, 2),
        "peak_rss_mb_before": round(before), "peak_rss_mb_after": round(peak_rss_mb()),
        "threads": os.environ.get("OMP_NUM_THREADS"), "load_avg": os.getloadavg(),
    }, indent=1))


if __name__ == "__main__":
    main()
