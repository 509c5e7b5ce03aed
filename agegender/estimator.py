"""The one-call API: ``Estimator().predict(image) -> list[Face]`` (detector + crops + model, like insightface's
``FaceAnalysis.get``).

The network runs in an *engine* (:mod:`agegender.engines`): onnxruntime where the model's ONNX graph is bundled
(the default: no torch needed, several times faster on a small shared CPU), else PyTorch. Everything around it
(detection, crops, test-time views and their averaging, intervals, groups) is the same for both.

Faces go to the engine in groups of ``FACES_PER_CALL`` and every group's views (and mirrors) in forward passes of at
most ``MAX_FORWARD_BATCH`` images, each pass's input built just before it runs: a photo with hundreds of faces
never holds more than one group's crops and one pass's input per worker in memory (single-threaded onnxruntime
passes, the default on CPUs: chunks of ``CHUNK_VIEWS`` queued at once, one worker per core taking the next, two
per core while other work shares the CPU: docs/performance.md). An ``Estimator`` may be shared by threads (a
Streamlit server, a video callback): MediaPipe calls are serialised by the detector's lock, engines are stateless,
and concurrent forward passes queue on one process-wide semaphore (:mod:`agegender.engines.threads`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from agegender.assurance.age_check import buffers_of
from agegender.assurance.calibration import Calibration, apply_calibration
from agegender.crops.chips import ChipFraming, FramedChip, frame_chip
from agegender.crops.align import crop_faces
from agegender.detection.detector import Detection, FaceDetector
from agegender.engines import ENGINE_NAMES
from agegender.engines.loader import PRECISIONS, default_model, load_model
from agegender.engines import threads as thread_policy
from agegender.engines.threads import parallel_map
from agegender.face import Face, faces_from_outputs
from agegender.groups import DEFAULT_PRESET, GroupPreset, get_preset
from agegender.io.images import ImageInput, load_image
from agegender.views import (OUTER_VIEWS, SCALE_TTA_CONTEXTS, ScaleTTA, combine_lazy, gender_margin, resolve,
                             scale_trigger)
from agegender.views import outer_views as policy_outer_views

MAX_FORWARD_BATCH = 16  # images per forward pass (see the module docstring)
CHUNK_VIEWS = 8  # images per single-threaded pass when chunks run side by side (see predict_batch)
OUTER = (SCALE_TTA_CONTEXTS[0], SCALE_TTA_CONTEXTS[-1])  # the tighter and the looser framing of scale TTA
FACES_PER_CALL = 32  # faces cropped and sent to the engine at once (bounds memory: ~7 MB of crops per round)
NUM_AGE_BINS = 101


class Estimator:
    """Detect every face in an image and estimate its age distribution and gender.

    Parameters
    ----------
    model:
        Backbone name (``"resnet50"``, ``"efficientnet_lite0"``) or ``None`` for the bundled default (the model
        with the best measured accuracy, named in ``weights/MANIFEST.json``).
    detector:
        ``"auto"``, ``"short"`` or ``"full"`` (see :class:`agegender.detection.detector.FaceDetector`).
    device:
        ``"cpu"`` or a GPU (``"cuda"``…: torch's device, or onnxruntime's CUDA provider where installed);
        detection always runs on the CPU.
    engine:
        ``"auto"`` (default): onnxruntime when the model's ONNX graph is bundled and onnxruntime is installed,
        else torch. ``"onnx"`` or ``"torch"`` force one (:mod:`agegender.engines`). Untrained networks and
        ``.safetensors`` files always run in torch; an ``.onnx`` file in onnxruntime.
    precision:
        onnx engine only: ``"auto"`` (default) runs a bundled int8 graph where one exists — one is bundled only if
        it passed ``train.quantize``'s rule (validation MAE +≤ 0.03 years, gender −≤ 0.2 points, ≥ 1.3× faster)
        — else float32; ``"float32"``/``"int8"`` force one.
    groups:
        Age-group preset name, a :class:`GroupPreset`, or custom lower edges.
    weights:
        ``"bundled"`` (verified file from ``weights/``; an error if none is bundled for ``model``), a path to a
        ``.safetensors`` or exported ``.onnx`` file, or ``None`` for an *untrained*, randomly initialised network (tests only; warns).
    flip_tta:
        Also run every crop mirrored and average the two distributions (on by default): faces are nearly
        symmetric, so the mirror is a second, slightly different view that cancels part of the network's noise
        (:mod:`agegender.views` has the validation figures), for twice the network time.
    scale_tta:
        Also crop every face 10 % tighter and 10 % looser (:data:`SCALE_TTA_CONTEXTS`) and average the views (on by
        default): the detector's box wobbles by about that much from photo to photo, so a face seen at three
        framings depends less on one box (validation: docs/performance.md). ``True`` (default) follows the model's
        view policy chosen on validation (:mod:`agegender.views`: scale views only for the faces the network is
        unsure of, where the manifest says so; else always); ``"all"`` always runs all six views; ``False`` never
        (the live camera turns them off per call).
    outer_views:
        ``None`` (default): the model's view policy says how many scale views an unsure face gets;
        ``"alternate"`` forces two (the tighter crop, the looser one mirrored), ``"all"`` four. For an estimate
        whose gender nobody reads (the age check's second opinion), where validation says the age holds.
    calibrate:
        Apply the calibration stored beside the bundled weights (manifest ``"calibration"``, fitted on validation
        with default TTA: :mod:`agegender.assurance.calibration`) to ``age_probs`` and the 80 % interval (default on).
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
        scale_tta: ScaleTTA = True,
        engine: str = "auto",
        precision: str = "auto",
        calibrate: bool = True,
        outer_views: str | None = None,
    ):
        if engine not in ENGINE_NAMES:
            raise ValueError(f"engine must be one of {', '.join(ENGINE_NAMES)}, not {engine!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if outer_views is not None and outer_views not in OUTER_VIEWS:
            raise ValueError(f"outer_views must be None or one of {', '.join(OUTER_VIEWS)}, not {outer_views!r}")
        self.precision = precision
        self.weights_dir = weights_dir
        self.flip_tta = bool(flip_tta)
        if scale_tta not in (True, False, "all", "validated"):
            raise ValueError(f"scale_tta must be True, False, 'all' or 'validated', not {scale_tta!r}")
        self.scale_tta = scale_tta if isinstance(scale_tta, str) else bool(scale_tta)
        self.model_name = model or default_model(weights, weights_dir)
        self.preset = get_preset(groups)
        self.device = str(device)
        loaded = load_model(self.model_name, weights, engine=engine, precision=precision, weights_dir=weights_dir,
                            device=self.device)
        self.engine, self.weights_info, self.trained = loaded.engine, loaded.weights_info, loaded.trained
        self.engine_name = self.engine.name
        self.scale_trigger = scale_trigger(self.weights_info)  # the model's validated view policy (agegender.views)
        self.outer_views = outer_views or policy_outer_views(self.weights_info)
        self.gender_margin = gender_margin(self.weights_info)
        self.input_size = int(self.engine.input_size)
        cal = self.weights_info.get("calibration")
        self.calibration = Calibration.from_dict(cal) if calibrate and cal else None
        # the age-check buffers were chosen on this model's calibrated outputs: they vouch for nothing else
        self.validated_buffers = buffers_of(self.weights_info) if self.calibration is not None else None
        self.detector_mode = detector
        self.detector = FaceDetector(detector, min_score=min_score, min_face_size=min_face_size,
                                     max_faces=max_faces, weights_dir=weights_dir)

    @property
    def net(self):
        """The torch module (torch engine only: tests and training tools inspect it)."""
        if self.engine.name != "torch":
            raise AttributeError("this Estimator runs the onnx engine, which has no torch module; "
                                 "use Estimator(engine='torch')")
        return self.engine.net

    # ------------------------------------------------------------------ inference
    def detect(self, image: ImageInput) -> tuple[np.ndarray, list[Detection]]:
        """Decode ``image`` and find its faces (no age/gender); returns (rgb, detections)."""
        rgb = load_image(image)
        return rgb, self.detector.detect(rgb)

    def predict(self, image: ImageInput, *, bgr: bool = False, keep_crops: bool = True,
                scale_tta: ScaleTTA | None = None) -> list[Face]:
        """All faces of one image, left to right, each with age and gender (one batched model call).

        ``bgr=True`` for OpenCV/video frames given as arrays. ``scale_tta`` overrides the estimator's setting for
        this call only (the live camera turns it off for frame rate; the shared estimator is not changed).
        """
        rgb = load_image(image, bgr=bgr)
        detections = self.detector.detect(rgb)
        return self.predict_detections(rgb, detections, keep_crops=keep_crops, scale_tta=scale_tta)

    def predict_detections(self, rgb: np.ndarray, detections: list[Detection], keep_crops: bool = True,
                           scale_tta: ScaleTTA | None = None) -> list[Face]:
        """Age/gender for given detections of an RGB image (e.g. from a tracker that reuses boxes)."""
        return self._faces([(rgb, d) for d in detections], detections, keep_crops, self._trigger(scale_tta))

    def _trigger(self, scale_tta: ScaleTTA | None) -> float | None:
        return resolve(self.scale_tta if scale_tta is None else scale_tta, self.scale_trigger)

    def _crops(self, sources: Sequence[tuple[np.ndarray, Detection]], contexts: Sequence[float]) -> np.ndarray:
        """(N, len(contexts), S, S, 3): each (image, detection) cropped at each framing context."""
        return crop_faces(sources, self.input_size, contexts)

    def predict_crops(self, faces: Sequence[ImageInput], framing: ChipFraming = "detect",
                      keep_crops: bool = False, scale_tta: ScaleTTA | None = None) -> list[Face]:
        """One Face per input image that already shows a single face (a face chip, e.g. UTKFace).

        ``framing="detect"`` (default) frames each chip as the training crops were framed: its main face is
        detected on a copy with a replicated border and cropped like a face in a photo; where no face is found
        the fixed chip template is used and ``score`` is 0. ``framing="template"`` always uses the template (no
        detection; faster, but less accurate: see :mod:`agegender.crops.chips`). Boxes are in each chip's pixels.
        """
        return self.predict_framed(self.frame_chips(faces, framing), keep_crops=keep_crops, scale_tta=scale_tta)

    def frame_chips(self, faces: Sequence[ImageInput], framing: ChipFraming = "detect") -> list[FramedChip]:
        """Each chip framed for the model (see :meth:`predict_crops`); apart so that several models can share
        one framing (:mod:`agegender.assurance.consensus`)."""
        return [frame_chip(load_image(item), self.detector if framing == "detect" else None, framing)
                for item in faces]

    def predict_framed(self, framed: Sequence[FramedChip], keep_crops: bool = False,
                       scale_tta: ScaleTTA | None = None) -> list[Face]:
        """One Face per chip framed by :meth:`frame_chips`."""
        return self._faces([(f.image, f.detection) for f in framed], [f.reported for f in framed], keep_crops,
                           self._trigger(scale_tta))

    def predict_batch(self, crops: np.ndarray, mirror: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw model outputs for crops already at ``input_size``, uint8 RGB: (age_probs, p_female) per face.

        ``crops`` is (N, S, S, 3), or (N, V, S, S, 3) for V views of each face (scale TTA) whose probabilities are
        averaged. With ``flip_tta`` every view's mirror is run too (2·N·V images: all views first, then all
        mirrors, in forward passes of at most ``MAX_FORWARD_BATCH``, or chunks of ``CHUNK_VIEWS`` side by side,
        each pass's input built just before it runs) and averaged in; ``mirror=False`` skips the mirrors."""
        crops = np.asarray(crops)
        n, v = len(crops), (crops.shape[1] if crops.ndim == 5 else 1)
        if n == 0:
            return np.zeros((0, NUM_AGE_BINS), np.float64), np.zeros((0,), np.float64)
        views = crops.reshape(-1, *crops.shape[-3:])
        if views.dtype != np.uint8:
            views = np.clip(np.rint(views), 0, 255).astype(np.uint8)
        passes = 2 if (self.flip_tta if mirror is None else mirror) else 1
        total = len(views) * passes

        def run(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            source, mirrored = index % len(views), index >= len(views)
            chunk = views[source]
            if mirrored.any():
                chunk[mirrored] = chunk[mirrored, :, ::-1]
            return (source, *self.engine.run(chunk))

        # Single-threaded passes: every chunk is queued at once and each worker (one per core, two on a busy CPU:
        # engines.threads.pass_width) takes the next one when it is done, so a worker that the OS preempts holds up
        # nothing but its own chunk. The chunks are a multiple of the workers and of near-equal size (28 views on
        # two cores: 7 + 7 + 7 + 7, not 8 + 8 + 8 + 4, which left one worker idle for four views: performance.md).
        chunked = getattr(self.engine, "parallel_chunks", False)
        # one reading per call, so that chunks and workers agree; a few views make one chunk per core at any width
        width = (thread_policy.pass_width() if total > thread_policy.concurrent_passes()
                 else thread_policy.concurrent_passes()) if chunked else 1
        if chunked:
            count = width * math.ceil(total / (width * CHUNK_VIEWS))
            bounds = [round(i * total / count) for i in range(count + 1)]
            chunks = [np.arange(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
        else:
            chunks = [np.arange(i, min(i + MAX_FORWARD_BATCH, total)) for i in range(0, total, MAX_FORWARD_BATCH)]
        results = parallel_map(run, chunks, width) if chunked else [run(index) for index in chunks]
        age_sum, female_sum = np.zeros((n, NUM_AGE_BINS), np.float64), np.zeros(n, np.float64)
        for source, age_probs, p_female in results:
            np.add.at(age_sum, source // v, age_probs)
            np.add.at(female_sum, source // v, p_female)
        return age_sum / (passes * v), female_sum / (passes * v)

    def _faces(self, sources: Sequence[tuple[np.ndarray, Detection]], detections: Sequence[Detection],
               keep_crops: bool, trigger: float | None) -> list[Face]:
        """Faces of each (image, detection) in ``sources``, reported with the boxes of ``detections``: the calibrated
        crop of every face, the outer framings only for the faces :func:`agegender.views.combine_lazy` picks; the
        crop kept for display is the calibrated one."""
        if not sources:
            return []
        middle = crop_faces(sources, self.input_size, (1.0,))[:, 0]
        alternate = self.flip_tta and self.outer_views == "alternate"  # two scale views (agegender.views)
        parts = []
        for i in range(0, len(sources), FACES_PER_CALL):
            chunk = sources[i:i + FACES_PER_CALL]
            parts.append(combine_lazy(self.predict_batch, middle[i:i + FACES_PER_CALL], trigger,
                                      lambda faces, chunk=chunk: self._crops([chunk[j] for j in faces], OUTER),
                                      partial(self.predict_batch, mirror=False) if alternate else None,
                                      self.gender_margin))
        age_probs = np.concatenate([a for a, _ in parts])
        p_female = np.concatenate([f for _, f in parts])
        intervals = None
        if self.calibration is not None:  # the conformal interval fitted on validation (agegender.assurance.calibration)
            age_probs, cal_low, cal_high = apply_calibration(age_probs, self.calibration)
            intervals = (cal_low, cal_high)
        return faces_from_outputs(detections, age_probs, p_female, self.preset, intervals,
                                  middle if keep_crops else None, calibrated=self.calibration is not None,
                                  validated_buffers=self.validated_buffers, model=self.model_name)

    def with_groups(self, faces: list[Face], groups: str | GroupPreset | Sequence[int]) -> list[Face]:
        """The same faces regrouped under another preset, without running the model again."""
        preset = get_preset(groups)
        m = preset.matrix
        for f in faces:
            f.groups = OrderedDict(zip(preset.labels, map(float, f.age_probs @ m)))
        return faces

    def info(self) -> dict:
        return {"model": self.model_name, "trained": self.trained, "input_size": self.input_size,
                "detector": self.detector_mode, "groups": self.preset.name, "device": self.device,
                "engine": self.engine.describe(),
                "flip_tta": self.flip_tta, "scale_tta": self.scale_tta,
                "scale_trigger_std_years": self.scale_trigger, "scale_trigger_gender_margin": self.gender_margin,
                "outer_views": self.outer_views,
                "weights": self.weights_info}

    def close(self) -> None:
        self.detector.close()
