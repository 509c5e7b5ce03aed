"""Shared, expensive test objects (session scoped) and helpers.

Everything here is built once per test session: one untrained Estimator (EfficientNet-Lite0, random weights: the
tests check structure, not accuracy, so they also pass once trained weights are bundled), one FaceDetector per
mode, the astronaut photo and a mosaic of astronauts at different scales.
"""

from __future__ import annotations

import io
import os
import socket
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

# Keep the suite polite on a shared 2-core machine (and deterministic).
os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

from agegender.paths import data_root  # noqa: E402

ASTRONAUT_CELL = 512
MOSAIC_SCALES = (512, 384, 256, 320, 448, 288)  # side of the astronaut pasted into each 512 px cell (2 x 3 grid)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (a test server, a DDP rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_train(*train_args: str) -> list[str]:
    """``python -m train ...`` in two local DDP processes (gloo on the CPU) meeting on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "train", *train_args]


def set_age_check(at, threshold: int, buffer: int) -> None:
    """On the age-check page in AppTest: a custom threshold and buffer, the page re-run, no exception."""
    at.selectbox(key="agecheck_threshold").set_value("other")
    at.run()
    at.number_input(key="agecheck_custom").set_value(threshold)
    at.slider(key="agecheck_buffer").set_value(buffer)
    at.run()
    assert not at.exception, at.exception


def data_path(*parts: str) -> Path:
    """A path under the research data root, or skip the test with the reason."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (set AGEGENDER_DATA to the folder holding utkface/ and group_photos/)")
    return path


def utkface_chips(n: int) -> list[Path]:
    """``n`` UTKFace chips spread over the sorted file list (deterministic), or skip."""
    folder = data_path("utkface", "images")
    files = sorted(folder.glob("*.jpg"))
    if len(files) < n:
        pytest.skip(f"needs at least {n} UTKFace chips in {folder}")
    step = len(files) // n
    return [files[i * step] for i in range(n)]


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    """Encode an image in memory with Pillow."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    img = np.ascontiguousarray(data.astronaut())
    img.setflags(write=False)  # a test that modifies the shared image must fail loudly
    return img


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.coffee())


@pytest.fixture(scope="session")
def mosaic(astronaut) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """2 x 3 grid of 512 px cells, each holding one astronaut of a different size (top-left aligned) on gray.

    Returns the image and, per cell, (x0, y0, side) of the pasted astronaut.
    """
    cells, layout = [], []
    for i, side in enumerate(MOSAIC_SCALES):
        cell = np.full((ASTRONAUT_CELL, ASTRONAUT_CELL, 3), 128, np.uint8)
        cell[:side, :side] = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
        cells.append(cell)
        layout.append(((i % 3) * ASTRONAUT_CELL, (i // 3) * ASTRONAUT_CELL, side))
    img = np.vstack([np.hstack(cells[:3]), np.hstack(cells[3:])])
    img.setflags(write=False)
    return img, layout


_DETECTORS: dict = {}


@pytest.fixture(scope="session")
def detectors():
    """``detectors(mode)`` → a shared FaceDetector with default options for that mode."""
    from agegender.detection.detector import FaceDetector

    def get(mode: str) -> FaceDetector:
        if mode not in _DETECTORS:
            _DETECTORS[mode] = FaceDetector(mode)
        return _DETECTORS[mode]

    yield get
    for det in _DETECTORS.values():
        det.close()
    _DETECTORS.clear()


@pytest.fixture(scope="session")
def estimator():
    """One untrained EfficientNet-Lite0 Estimator with the auto detector, shared by the whole session."""
    from agegender import Estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.manual_seed(0)
        est = Estimator(model="efficientnet_lite0", weights=None, detector="auto")
    # An untrained EfficientNet-Lite0 emits features of ~1e-9, so its outputs would be the same uniform
    # distribution for every face and comparisons between faces or threads would prove nothing. Rescale the
    # heads so that the (still random) outputs differ clearly from face to face.
    with torch.no_grad():
        x = torch.rand(4, 3, est.input_size, est.input_size, generator=torch.Generator().manual_seed(0))
        features = est.net.forward_features(x.contiguous(memory_format=torch.channels_last))
        scale = 2.0 / float(features.pow(2).mean().sqrt() * est.net.age_head.weight.std() * features.shape[1] ** 0.5)
        est.net.age_head.weight.mul_(scale)
        est.net.gender_head.weight.mul_(scale)
    yield est
    est.close()


@pytest.fixture(scope="session")
def astronaut_reference(astronaut, detectors):
    """The single detection of the astronaut for each mode (used as the reference for moved/rotated copies)."""
    out = {}
    for mode in ("short", "full", "auto"):
        dets = detectors(mode).detect(astronaut)
        assert len(dets) == 1, f"{mode}: expected one face on the astronaut, got {len(dets)}"
        out[mode] = dets[0]
    return out
