"""Augmentation (albumentations 2.x) on cached crops, plus the on-device steps: normalisation and mixup.

Cached crops are wider than what the model sees (``context`` 1.25: the central 1/1.25 is exactly the app's
inference crop). Evaluation takes that centre. Training takes a random resized crop *around* it — side 0.72-0.88
of the cached crop (the inference crop is 0.8), aspect 0.9-1.1, confined to a central window so the face stays
framed as the detector + calibrated crop would frame it, with a few pixels of jitter that mimic detector noise.

Transforms work on uint8 and return uint8: batches travel to the device as bytes (4x less than float) and are
normalised there with the backbone's mean/std from the registry, exactly as ``Estimator.predict_batch`` does.

Each sample is augmented with a generator seeded from (run seed, epoch, index), so augmentation does not depend
on the number of DataLoader workers or processes, and a resumed run sees the same images as an uninterrupted one.
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
import torch

CROP_SIDE = (0.72, 0.88)  # random crop side as a fraction of the cached crop (inference crop: 1 / context)
CROP_ASPECT = (0.9, 1.1)
CROP_WINDOW = 0.925  # the random crop stays inside this central fraction: at most ~±10 px of shift at 160 px
ROTATE_DEGREES = 10
AUGMENT_POLICIES = ("standard", "strong", "wild")
WILD_FACE_FRACTION = 0.6  # the face's side as a fraction of the 160 px input crop (calibrated framing)


def train_transform(cache_size: int, input_size: int, policy: str = "standard",
                    degrade_probability: float = 0.5) -> A.Compose:
    """Random resized crop within the calibrated framing, flip, small rotation, then the photometric ``policy``
    (:func:`photometric`) and one random occluder."""
    window = round(CROP_WINDOW * cache_size)
    scale = ((CROP_SIDE[0] * cache_size / window) ** 2, (CROP_SIDE[1] * cache_size / window) ** 2)
    if scale[1] * CROP_ASPECT[1] > 1.0:
        raise ValueError("CROP_WINDOW is too small for the largest crop")
    # save_applied_params: which steps ran on a sample (``augment_applied``), e.g. whether it was degraded.
    return A.Compose([
        # Rotate the whole cached crop first, so replicated borders fall mostly outside the part we keep.
        A.Rotate(limit=ROTATE_DEGREES, border_mode=cv2.BORDER_REPLICATE, p=0.5),
        A.CenterCrop(window, window),
        A.RandomResizedCrop(size=(input_size, input_size), scale=scale, ratio=CROP_ASPECT,
                            interpolation=cv2.INTER_LINEAR, area_for_downscale="image"),
        A.HorizontalFlip(p=0.5),
        *photometric(policy, degrade_probability),
        # One occluder (hand, mask, sunglasses-sized) filled with a random flat colour.
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.15, 0.35), hole_width_range=(0.15, 0.35),
                        fill="random_uniform", p=0.25),
    ], save_applied_params=True)


def photometric(policy: str = "standard", degrade_probability: float = 0.5) -> list:
    """Colour and degradation steps.

    ``standard``: colour jitter, some grayscale, mild blur or JPEG. ``wild``: the standard steps, then, with
    ``degrade_probability``, the degraded-validation generator itself (:class:`WildDegradation`) with a fresh draw
    per sample: the families the models are judged on in the wild (docs/wild-photos.md). ``strong`` targets where
    the models fail: faces in the wild (blur from motion and focus, low light and dark scenes, small faces seen at low resolution and
    upscaled by the crop) and scanned old photos (film grain, sepia, grayscale), where the bundled model reads
    every age group 4-7 years too old. Each degradation is drawn independently, so they also combine (a blurred,
    grainy sepia scan)."""
    standard = [
        A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.03, p=0.8),
        A.ToGray(p=0.1),
        A.OneOf([
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2)),
            A.ImageCompression(quality_range=(35, 90)),
        ], p=0.3),
    ]
    if policy == "standard":
        return standard
    if policy == "wild":
        return [*standard, WildDegradation(degrade_probability)]
    if policy != "strong":
        raise ValueError(f"augmentation policy must be one of {AUGMENT_POLICIES}, not {policy!r}")
    return [
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.04, p=0.8),
        A.OneOf([  # low light / dark scenes: darker, flatter, gamma-crushed shadows
            A.RandomBrightnessContrast(brightness_limit=(-0.45, -0.1), contrast_limit=(-0.35, 0.0)),
            A.RandomGamma(gamma_limit=(130, 220)),
        ], p=0.25),
        A.OneOf([
            A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.5, 2.0)),
            A.MotionBlur(blur_limit=(3, 9)),
            A.Defocus(radius=(1, 3), alias_blur=(0.1, 0.3)),
        ], p=0.3),
        # A face 25-60 % of the crop's resolution, upscaled back: small faces in group photos and webcams.
        A.Downscale(scale_range=(0.25, 0.6), p=0.2),
        A.OneOf([  # grain of film scans and high-ISO sensors
            A.GaussNoise(std_range=(0.02, 0.08)),
            A.ISONoise(color_shift=(0.01, 0.04), intensity=(0.1, 0.5)),
        ], p=0.2),
        A.OneOf([A.ToGray(), A.ToSepia()], p=0.3),  # old photos
        A.ImageCompression(quality_range=(25, 90), p=0.3),
    ]


class WildDegradation(A.ImageOnlyTransform):
    """:func:`agegender.evaluation.degrade.apply_profile` as a training step, drawn from the transform's own
    generator (so a sample's augmentation stays a function of its seed). Validation and test use other draws of the
    same families (their seeds come from file names), so a model is not judged on images it trained on; they are,
    by design, judged on the same *kinds* of degradation it trained on, which is what the wild set stands for."""

    def __init__(self, p: float = 0.5, face_fraction: float = WILD_FACE_FRACTION):
        super().__init__(p=p)
        self.face_fraction = face_fraction

    def get_params(self) -> dict:
        return {"draw": self.py_random.randrange(2**31)}

    def apply(self, img: np.ndarray, draw: int = 0, **params) -> np.ndarray:
        from agegender.evaluation.degrade import apply_profile, degrade_profile

        return apply_profile(img, degrade_profile(draw, "train"), self.face_fraction)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("face_fraction",)


def eval_transform(cache_size: int, context: float, input_size: int) -> A.Compose:
    """The inference crop: the central ``cache_size / context`` pixels, resized to ``input_size`` if needed."""
    side = round(cache_size / context)
    steps: list = [A.CenterCrop(side, side)]
    if side != input_size:
        steps.append(A.Resize(input_size, input_size, interpolation=cv2.INTER_AREA if side > input_size
                              else cv2.INTER_LINEAR))
    return A.Compose(steps)


def augment(transform: A.Compose, image: np.ndarray, seed: int | None = None) -> np.ndarray:
    """Apply ``transform``; with ``seed``, from a fresh generator shared by all its steps (one stream of draws —
    ``Compose.set_random_seed`` would give every step the *same* seed and correlate their coin flips)."""
    return augment_applied(transform, image, seed)[0]


def augment_applied(transform: A.Compose, image: np.ndarray,
                    seed: int | None = None) -> tuple[np.ndarray, frozenset[str]]:
    """:func:`augment`, plus the class names of the steps that ran (a ``Compose`` built with
    ``save_applied_params``; empty otherwise): a sample's loss can then depend on how it was augmented."""
    if seed is not None:
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = transform(image=image)
    return out["image"], frozenset(name for name, _ in out.get("applied_transforms", ()))


class Normalize(torch.nn.Module):
    """uint8 (B, 3, H, W) → float, minus mean, over std (registry values in 0-1 units), optionally channels_last."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], channels_last: bool = False):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return ((images.float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)


def mixup(images: torch.Tensor, targets: tuple[torch.Tensor, ...],
          alpha: float) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Mix each sample with a shuffled partner: images and every (soft) target with the same λ ~ Beta(α, α).

    λ is folded to ≥ 0.5 so each sample keeps its own identity. Draws come from torch's global generator, whose
    state the checkpoints carry, so a resumed run mixes the same pairs."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    lam = max(lam, 1.0 - lam)
    perm = torch.randperm(images.shape[0]).to(images.device)
    mixed = images * lam + images[perm] * (1.0 - lam)
    return mixed, tuple(t * lam + t[perm] * (1.0 - lam) for t in targets)
