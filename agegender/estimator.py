"""The one-call API: ``Estimator().predict(image) -> list[Face]`` (detector + crops + model, like insightface's
``FaceAnalysis.get``).

All faces of an image (and their test-time views) go through the network in one batched call, split into forward
passes of at most ``MAX_FORWARD_BATCH`` images: on a 2-core CPU EfficientNet-Lite0 took 8.6 ms per 160 px image in
batches of 8–12, 13 ms in batches of 32 and 17 ms in batches of 96 (cache misses), and the chunks bound the
activation memory of a photo with dozens of faces. An ``Estimator`` may be shared by
threads (a Streamlit server, a video callback): MediaPipe calls are serialised by the detector's lock and the
network runs in inference mode without mutable state.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .chips import ChipFraming, frame_chip
from .crop import crop_face
from .detection import Detection, FaceDetector
from .errors import WeightsError
from .face import Face
from .groups import DEFAULT_PRESET, GroupPreset, age_interval, expected_age, get_preset
from .imageio import ImageInput, load_image
from .models import AgeGenderNet, net_options
from .weights import default_backbone, load_state_dict, model_entry

FALLBACK_BACKBONE = "resnet50"
MAX_FORWARD_BATCH = 16  # images per forward pass (see the module docstring)
SCALE_TTA_CONTEXTS = (0.9, 1.0, 1.1)  # scale_tta: the calibrated crop zoomed in 10 %, as is, zoomed out 10 %


class Estimator:
    """Detect every face in an image and estimate its age distribution and gender.

    Parameters
    ----------
    model:
        Backbone name (``"resnet50"``, ``"efficientnet_lite0"``) or ``None`` for the bundled default (the model
        with the best measured accuracy, named in ``weights/MANIFEST.json``).
    detector:
        ``"auto"``, ``"short"`` or ``"full"`` (see :class:`agegender.detection.FaceDetector`).
    device:
        torch device for the network (``"cpu"``, ``"cuda"``…); detection always runs on the CPU.
    groups:
        Age-group preset name, a :class:`GroupPreset`, or custom lower edges.
    weights:
        ``"bundled"`` (verified file from ``weights/``; an error if none is bundled for ``model``), a path to a
        ``.safetensors`` file, or ``None`` for an *untrained*, randomly initialised network (tests only; warns).
    flip_tta:
        Also run every crop mirrored and average the two distributions (on by default). Faces are nearly
        symmetric, so the mirror is a second, slightly different view that cancels part of the network's noise:
        on the validation splits it lowered the MAE of the bundled EfficientNet-Lite0 by 0.07 (UTKFace) and 0.10
        years (All-Age-Faces), for twice the network time (detection and cropping are unchanged).
    scale_tta:
        Also crop every face 10 % tighter and 10 % looser (:data:`SCALE_TTA_CONTEXTS`) and average the three views
        (each with its mirror under ``flip_tta``; on by default). The detector's box wobbles by about that much
        from photo to photo, so a model that has seen each face at three framings depends less on one box. On the
        validation splits (selected by combined MAE, like the training stages) it lowered the MAE of the bundled
        EfficientNet-Lite0 on UTKFace val crops from 4.46 to 4.42 (±5 68.0 → 68.7 %) and on All-Age-Faces val
        photos from 5.32 to 5.20, for about three times the network time. The live camera turns it off per call.
    """

    def __init__(
        self,
        model: str | None = None,
        detector: str = "auto",
        device: str = "cpu",
        groups: str | GroupPreset | Sequence[int] = DEFAULT_PRESET,
        weights: str | Path | None = "bundled",
        min_score: float = 0.5,
        min_face_size: int = 0,
        max_faces: int | None = None,
        weights_dir: str | Path | None = None,
        flip_tta: bool = True,
        scale_tta: bool = True,
    ):
        self.weights_dir = weights_dir
        self.flip_tta = bool(flip_tta)
        self.scale_tta = bool(scale_tta)
        if model is None:
            model = default_backbone(weights_dir) or FALLBACK_BACKBONE
        self.model_name = model
        self.preset = get_preset(groups)
        self.device = torch.device(device)
        self.weights_info: dict = {}
        self.trained = False
        bundled = model_entry(model, weights_dir) if isinstance(weights, str) and weights == "bundled" else None
        # Input size, layout and normalisation as recorded with the weights (manifest entry or file metadata).
        self.net = AgeGenderNet(model, dropout=0.0, **net_options(bundled[1] if bundled else weights))
        self._load_weights(weights)
        self.net.eval().to(self.device)
        if self.device.type == "cpu":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.input_size = self.net.input_size
        self._mean = torch.tensor(self.net.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(self.net.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self.detector_mode = detector
        self.detector = FaceDetector(detector, min_score=min_score, min_face_size=min_face_size,
                                     max_faces=max_faces, weights_dir=weights_dir)
        self._aux_detector: FaceDetector | None = None
        self._aux_lock = threading.Lock()

    # ------------------------------------------------------------------ weights
    def _load_weights(self, weights: str | Path | None) -> None:
        if weights is None:
            warnings.warn(f"agegender: {self.model_name} runs with random, UNTRAINED weights; its ages and genders "
                          "are meaningless (use this for tests only)", UserWarning, stacklevel=3)
            self.weights_info = {"file": None, "trained": False}
            return
        if isinstance(weights, str) and weights == "bundled":
            found = model_entry(self.model_name, self.weights_dir)
            if found is None:
                raise WeightsError(
                    f"no trained weights for {self.model_name!r} are bundled in weights/ (see MANIFEST.json). "
                    "Train them with `python -m train`, or pass weights=None for an untrained model (tests only)."
                )
            name, entry = found
            state = load_state_dict(name, self.weights_dir)
            self.weights_info = {"file": name, **{k: v for k, v in entry.items() if k != "metrics"},
                                 "metrics": entry.get("metrics", {})}
        else:
            from safetensors.torch import load_file

            path = Path(weights)
            if not path.is_file():
                raise WeightsError(f"{path}: weights file not found")
            try:
                state = {k: v.float() for k, v in load_file(str(path)).items()}
            except Exception as exc:
                raise WeightsError(f"{path} is not a readable safetensors file: {exc}") from None
            self.weights_info = {"file": str(path)}
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"weights do not match the {self.model_name} architecture: {exc}") from None
        self.trained = True
        self.weights_info["trained"] = True

    # ------------------------------------------------------------------ inference
    def detect(self, image: ImageInput) -> tuple[np.ndarray, list[Detection]]:
        """Decode ``image`` and find its faces (no age/gender); returns (rgb, detections)."""
        rgb = load_image(image)
        return rgb, self.detector.detect(rgb)

    def predict(self, image: ImageInput, *, bgr: bool = False, keep_crops: bool = True,
                scale_tta: bool | None = None) -> list[Face]:
        """All faces of one image, left to right, each with age and gender (one batched model call).

        ``bgr=True`` for OpenCV/video frames given as arrays. ``scale_tta`` overrides the estimator's setting for
        this call only (the live camera turns it off for frame rate; the shared estimator is not changed).
        """
        rgb = load_image(image, bgr=bgr)
        detections = self.detector.detect(rgb)
        return self.predict_detections(rgb, detections, keep_crops=keep_crops, scale_tta=scale_tta)

    def predict_detections(self, rgb: np.ndarray, detections: list[Detection], keep_crops: bool = True,
                           scale_tta: bool | None = None) -> list[Face]:
        """Age/gender for given detections of an RGB image (e.g. from a tracker that reuses boxes)."""
        views = [self._views(rgb, d, scale_tta) for d in detections]
        return self._faces(detections, views, keep_crops)

    def _views(self, image: np.ndarray, det: Detection, scale_tta: bool | None) -> np.ndarray:
        """(V, S, S, 3) crops of one face: the calibrated crop, and with scale TTA a tighter and a looser one."""
        contexts = SCALE_TTA_CONTEXTS if (self.scale_tta if scale_tta is None else scale_tta) else (1.0,)
        return np.stack([crop_face(image, det, size=self.input_size, context=c) for c in contexts])

    def predict_crops(self, faces: Sequence[ImageInput], framing: ChipFraming = "detect",
                      keep_crops: bool = False, scale_tta: bool | None = None) -> list[Face]:
        """One Face per input image that already shows a single face (a face chip, e.g. UTKFace).

        ``framing="detect"`` (default) frames each chip as the training crops were framed: its main face is
        detected on a copy with a replicated border and cropped like a face in a photo; where no face is found
        the fixed chip template is used and ``score`` is 0. ``framing="template"`` always uses the template (no
        detection; faster, but less accurate: see :mod:`agegender.chips`). Boxes are in each chip's pixels.
        """
        reported, views = [], []
        for item in faces:
            framed = frame_chip(load_image(item), self.detector if framing == "detect" else None, framing)
            views.append(self._views(framed.image, framed.detection, scale_tta))
            reported.append(framed.reported)
        return self._faces(reported, views, keep_crops)

    @torch.inference_mode()
    def predict_batch(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw model outputs for crops already at ``input_size``, uint8 RGB: (age_probs, p_female) per face.

        ``crops`` is (N, S, S, 3), or (N, V, S, S, 3) for V views of each face (scale TTA) whose probabilities are
        averaged. With ``flip_tta`` every view's mirror joins the same batch (2·N·V images, run in forward passes
        of at most ``MAX_FORWARD_BATCH``); its probabilities are averaged in too."""
        crops = np.asarray(crops)
        views = crops.reshape(-1, *crops.shape[-3:])
        n, v = len(crops), (crops.shape[1] if crops.ndim == 5 else 1)
        if n == 0:
            return np.zeros((0, 101), np.float64), np.zeros((0,), np.float64)
        x = torch.from_numpy(np.ascontiguousarray(views)).to(self.device).permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        passes = 2 if self.flip_tta else 1
        if self.flip_tta:
            x = torch.cat([x, x.flip(3)])
        outputs = [self.net(chunk.contiguous(memory_format=torch.channels_last))
                   for chunk in x.split(MAX_FORWARD_BATCH)]
        age_logits = torch.cat([age for age, _ in outputs])
        gender_logit = torch.cat([gender for _, gender in outputs])
        age_probs = torch.softmax(age_logits.float(), dim=1).view(passes, n, v, -1).mean(dim=(0, 2))
        p_female = torch.sigmoid(gender_logit.float()).view(passes, n, v).mean(dim=(0, 2))
        return age_probs.cpu().numpy().astype(np.float64), p_female.cpu().numpy().astype(np.float64)

    def _faces(self, detections: Sequence[Detection], views: list[np.ndarray], keep_crops: bool) -> list[Face]:
        """Faces from each detection's (V, S, S, 3) views; the crop kept for display is the calibrated one."""
        if not views:
            return []
        age_probs, p_female = self.predict_batch(np.stack(views))
        ages = expected_age(age_probs)
        group_matrix = self.preset.matrix
        faces = []
        for i, det in enumerate(detections):
            low, high = age_interval(age_probs[i], 0.8)
            # The mean of a skewed or two-peaked distribution can lie outside its central 80 % (e.g. 95 % at 28 and
            # 5 % at 100: mean 31.6, interval 28-28); widen the interval to contain the reported age.
            low, high = min(low, float(math.floor(ages[i] + 1e-6))), max(high, float(math.ceil(ages[i] - 1e-6)))
            group_values = age_probs[i] @ group_matrix
            faces.append(Face(
                box=tuple(int(round(v)) for v in det.box),
                score=float(det.score),
                keypoints=np.asarray(det.keypoints, dtype=np.float32),
                age=float(ages[i]),
                age_low=low,
                age_high=high,
                age_probs=age_probs[i],
                groups=OrderedDict(zip(self.preset.labels, map(float, group_values))),
                gender="female" if p_female[i] >= 0.5 else "male",
                p_female=float(p_female[i]),
                index=i + 1,
                crop=views[i][len(views[i]) // 2] if keep_crops else None,
            ))
        return faces

    def with_groups(self, faces: list[Face], groups: str | GroupPreset | Sequence[int]) -> list[Face]:
        """The same faces regrouped under another preset, without running the model again."""
        preset = get_preset(groups)
        m = preset.matrix
        for f in faces:
            f.groups = OrderedDict(zip(preset.labels, map(float, f.age_probs @ m)))
        return faces

    def info(self) -> dict:
        return {"model": self.model_name, "trained": self.trained, "input_size": self.input_size,
                "detector": self.detector_mode, "groups": self.preset.name, "device": str(self.device),
                "flip_tta": self.flip_tta, "scale_tta": self.scale_tta,
                "weights": self.weights_info}

    def close(self) -> None:
        self.detector.close()
