"""A *degraded* copy of any labelled image, made at evaluation time and the same every time: faces as users meet
them outside clean datasets.

Users read scanned family photos (faded colour, grain, low resolution) and low-quality web photos; the bundled
models read such faces years too old. The validation and test splits are clean chips and portraits, so this module
makes each image look like the wild, deterministically: the degradation of an image depends only on ``seed`` and its
file name (never on the order, the subset or the process), so a model is always compared on the same pictures.

Each image draws a few of these families (:data:`FAMILIES`), in the order a real photo suffers them:

* ``print``: a faded, colour-cast print: sepia, yellowed paper, or washed-out low contrast with lifted blacks;
* ``gray``: a black-and-white photo;
* ``exposure``: over- or under-exposed (gamma and gain);
* ``blur``: out of focus (Gaussian) or camera shake (a motion kernel at a random angle);
* ``resolution``: the face shrunk to 24–64 px and scaled back (a small face of a group photo, a thumbnail);
* ``grain``: film grain or sensor noise;
* ``jpeg``: JPEG at quality 10–40 (every web photo, last).

At least two families apply to every image. :func:`degrade_profile` says which, with their parameters (written to
each prediction row, so a report can be sliced by family).
"""

from __future__ import annotations

import zlib
from typing import Any

import cv2
import numpy as np

FAMILIES = ("print", "gray", "exposure", "blur", "resolution", "grain", "jpeg")
PROBABILITY = {"print": 0.35, "gray": 0.2, "exposure": 0.3, "blur": 0.4, "resolution": 0.5, "grain": 0.35,
               "jpeg": 0.6}
MIN_FAMILIES = 2
FACE_FRACTION = {"crops": 0.65, "photos": 0.45, "pasted": 0.65}
"""The face's side as a fraction of the image's short side, per evaluation mode (UTKFace chips, All-Age-Faces
portraits, and chips before they are pasted): what ``resolution`` scales to a 24–64 px face."""


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def degrade_profile(seed: int, name: str) -> dict[str, Any]:
    """The families and parameters drawn for the image called ``name`` (a file name): JSON-safe."""
    rng = _rng(seed, name)
    draws = {family: rng.random() < PROBABILITY[family] for family in FAMILIES}
    while True:
        if draws["gray"] and draws["print"]:
            draws["gray"] = False  # a print's colour cast is its own tint
        if sum(draws.values()) >= MIN_FAMILIES:
            break
        draws[FAMILIES[int(rng.integers(len(FAMILIES)))]] = True
    profile: dict[str, Any] = {}
    if draws["print"]:
        kind = ["sepia", "yellowed", "faded"][int(rng.integers(3))]
        profile["print"] = {"kind": kind, "strength": round(float(rng.uniform(0.5, 1.0)), 3),
                            "contrast": round(float(rng.uniform(0.55, 0.85)), 3),
                            "lift": round(float(rng.uniform(10, 45)), 1)}
    if draws["gray"]:
        profile["gray"] = {}
    if draws["exposure"]:
        over = bool(rng.random() < 0.5)
        profile["exposure"] = {"gamma": round(float(rng.uniform(0.45, 0.7) if over else rng.uniform(1.5, 2.4)), 3),
                               "gain": round(float(rng.uniform(1.1, 1.4) if over else rng.uniform(0.5, 0.8)), 3)}
    if draws["blur"]:
        if rng.random() < 0.5:
            profile["blur"] = {"kind": "gaussian", "sigma": round(float(rng.uniform(0.8, 2.5)), 3)}
        else:
            profile["blur"] = {"kind": "motion", "length": int(rng.integers(5, 12)),
                               "angle": round(float(rng.uniform(0, 180)), 1)}
    if draws["resolution"]:
        profile["resolution"] = {"face_px": int(rng.integers(24, 65))}
    if draws["grain"]:
        profile["grain"] = {"sigma": round(float(rng.uniform(5, 18)), 2), "seed": int(rng.integers(2**31))}
    if draws["jpeg"]:
        profile["jpeg"] = {"quality": int(rng.integers(10, 41))}
    return profile


def degrade(rgb: np.ndarray, seed: int, name: str, mode: str = "crops") -> np.ndarray:
    """The degraded copy of an RGB uint8 image (same size), as :func:`degrade_profile` draws it for ``name``."""
    return apply_profile(rgb, degrade_profile(seed, name), FACE_FRACTION.get(mode, 0.65))


def apply_profile(rgb: np.ndarray, profile: dict[str, Any], face_fraction: float = 0.65) -> np.ndarray:
    img = rgb.astype(np.float32)
    if "print" in profile:
        img = _print(img, **profile["print"])
    if "gray" in profile:
        img = np.repeat((img @ np.float32([0.299, 0.587, 0.114]))[..., None], 3, axis=2)
    if "exposure" in profile:
        p = profile["exposure"]
        img = 255.0 * np.clip(img / 255.0, 0, 1) ** p["gamma"] * p["gain"]
    img = np.clip(img, 0, 255)
    if "blur" in profile:
        img = _blur(img, profile["blur"])
    if "resolution" in profile:
        h, w = img.shape[:2]
        scale = min(1.0, profile["resolution"]["face_px"] / max(1.0, face_fraction * min(h, w)))
        small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if "grain" in profile:
        noise = np.random.default_rng(profile["grain"]["seed"]).normal(0, profile["grain"]["sigma"], img.shape[:2])
        img = img + noise[..., None].astype(np.float32)  # luminance grain, as film and high-ISO sensors show
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if "jpeg" in profile:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, profile["jpeg"]["quality"]])
        out = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(out)


_SEPIA = np.float32([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
_YELLOWED = np.float32([1.0, 0.93, 0.72])


def _print(img: np.ndarray, kind: str, strength: float, contrast: float, lift: float) -> np.ndarray:
    if kind == "sepia":
        tinted = img @ _SEPIA.T
    elif kind == "yellowed":
        tinted = img * _YELLOWED
    else:
        tinted = img
    img = (1 - strength) * img + strength * tinted
    mean = img.mean(axis=(0, 1), keepdims=True)
    return (img - mean) * contrast + mean + lift * (1 - contrast)  # washed out, blacks lifted


def _blur(img: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    if p["kind"] == "gaussian":
        return cv2.GaussianBlur(img, (0, 0), p["sigma"])
    length = p["length"]
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), p["angle"], 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    return cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
