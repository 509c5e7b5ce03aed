"""Second opinions for the age check: every bundled model looks at the same crop, and a face passes only if all of
them pass.

Why: no single model met the age check's bar on validation (≤ 1 % of 13–17-year-olds passing at t = 18). Each
missed it by one face, and not the same face: the EfficientNet-Lite0 read a 16-year-old as 47 whom the ResNet-50
read as 31, the ResNet-50 read a 15-year-old as 44 whom the Lite0 read as 30. Their mistakes are far less
correlated than their estimates, so requiring both to pass stops the outliers of each at smaller buffers than
either needs alone. The price is time: the ResNet-50 costs about four Lite0s per view.

The pair, its buffers (per threshold and model, chosen together on validation by
``python -m agegender.evaluation.consensus fit``) and the test-time views each model runs in the panel live in
``weights/MANIFEST.json`` under ``"age_check_consensus"``. The views are part of what was validated: a second
opinion that runs the mirror only (``"views": {"resnet50": "mirror"}``) or two alternate scale views instead of
four (``"alternate"``: its gender is never read) was measured that way, and runs that way whatever the call asks of
the first model's views. :class:`ConsensusEstimator` has the calls of
:class:`~agegender.Estimator` that the age check uses; its Faces are the first model's, with the others' estimates
in ``Face.second_opinions``, so ``Face.age_check`` (:mod:`agegender.assurance.age_check`) decides for the whole
panel.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from agegender.crops.chips import ChipFraming
from agegender.estimator import Estimator
from agegender.face import Face
from agegender.groups import DEFAULT_PRESET, GroupPreset
from agegender.io.images import ImageInput, load_image
from agegender.views import VIEW_SETS, ScaleTTA

MANIFEST_KEY = "age_check_consensus"


def consensus_policy(weights_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The manifest's ``"age_check_consensus"`` (``models``, ``buffers`` {t: {model: buffer}}, ``meets_bar``,
    ``rule``, ``report``), or None when none is installed or one of its models is not bundled."""
    from agegender.weights import model_entry, read_manifest

    policy = read_manifest(weights_dir).get(MANIFEST_KEY)
    if not policy or len(policy.get("models") or ()) < 2:
        return None
    if any(model_entry(m, weights_dir) is None for m in policy["models"]):
        return None
    return policy


def buffers_by_model(policy: Mapping[str, Any]) -> dict[str, dict[int, int]]:
    """``{model: {threshold: buffer}}`` from a policy's ``{"18": {model: buffer}}``."""
    out: dict[str, dict[int, int]] = {m: {} for m in policy["models"]}
    for t, per_model in (policy.get("buffers") or {}).items():
        for model, b in (per_model or {}).items():  # None: no buffers were chosen for t
            if model in out and b is not None:
                out[model][int(t)] = int(b)
    return out


def panel_views(policy: Mapping[str, Any]) -> dict[str, str]:
    """``{model: view set}`` (:data:`agegender.views.VIEW_SETS`) of a policy; "validated" where it names none
    (policies installed before the views were recorded were all measured with each model's own views)."""
    views = policy.get("views") or {}
    out = {m: str(views.get(m, "validated")) for m in policy["models"]}
    unknown = {v for v in out.values() if v not in VIEW_SETS}
    if unknown:
        raise ValueError(f"age_check_consensus: unknown views {', '.join(sorted(unknown))}")
    return out


class ConsensusEstimator:
    """The bundled models of the consensus policy behind one ``predict``; the first model's detector and crops
    serve all of them (same faces, same pixels), and each model keeps its own calibration.

    Parameters are :class:`~agegender.Estimator`'s (``model`` and ``weights`` excepted: the models are the
    policy's, on their bundled weights). Raises ``ValueError`` when no consensus policy is installed.
    """

    def __init__(self, detector: str = "auto", min_score: float = 0.5, max_faces: int | None = None,
                 weights_dir: str | Path | None = None, flip_tta: bool = True, scale_tta: bool = True,
                 groups: str | GroupPreset | Sequence[int] = DEFAULT_PRESET, engine: str = "auto",
                 device: str = "cpu", min_face_size: int = 0):
        policy = consensus_policy(weights_dir)
        if policy is None:
            raise ValueError("no age-check consensus is installed in weights/MANIFEST.json "
                             "(python -m agegender.evaluation.consensus install)")
        self.policy = policy
        self.models: list[str] = list(policy["models"])
        own = buffers_by_model(policy)
        common = dict(weights_dir=weights_dir, flip_tta=flip_tta, scale_tta=scale_tta, groups=groups,
                      engine=engine, device=device, min_score=min_score)
        self.members = [Estimator(self.models[0], detector=detector, max_faces=max_faces,
                                  min_face_size=min_face_size, **common)]
        # the others never detect: the cheapest detector is loaded only because an Estimator always has one
        self.members += [Estimator(m, detector="short", **common) for m in self.models[1:]]
        self.views = panel_views(policy)
        for member in self.members:
            fixed = VIEW_SETS[self.views[member.model_name]]
            if self.views[member.model_name] != "validated":  # measured with fewer views: never more than those
                member.flip_tta = flip_tta and fixed["flip_tta"]
                member.scale_tta = scale_tta and fixed["scale_tta"]
                member.outer_views = fixed.get("outer_views", member.outer_views)
        for member in self.members:
            if member.calibration is None:
                raise ValueError(f"{member.model_name} has no calibration: its buffers would vouch for nothing")
            member.validated_buffers = own[member.model_name] or None
        # the second opinions' threads (see _each_member); a few, so that sessions sharing the panel never queue
        self._others = ThreadPoolExecutor(max_workers=4 * (len(self.members) - 1) or 1,
                                          thread_name_prefix="agegender-panel")
        self.primary = self.members[0]
        self.model_name = "+".join(self.models)
        self.trained = all(m.trained for m in self.members)
        self.validated_buffers = self.primary.validated_buffers
        self.detector = self.primary.detector

    def predict(self, image: ImageInput, *, bgr: bool = False, keep_crops: bool = True,
                scale_tta: ScaleTTA | None = None) -> list[Face]:
        """The first model's faces, each carrying the others' estimates of the same crop as ``second_opinions``."""
        rgb = load_image(image, bgr=bgr)
        detections = self.primary.detector.detect(rgb)
        return _attach(self._each_member(lambda i, m: m.predict_detections(
            rgb, detections, keep_crops=keep_crops and i == 0, scale_tta=self._scale_tta(m, scale_tta))))

    def _each_member(self, call: Callable[[int, Estimator], list[Face]]) -> list[list[Face]]:
        """``[call(i, member) ...]`` with the members side by side: the first on the calling thread, each other on
        a panel thread. Why: each model alone runs its views in rounds (the mirror pair, then the scale views of the
        unsure faces) with single-threaded work between them (crops, the trigger, calibration), and on a one-face
        photo a round is one view per core; the other model's passes fill the idle cores. Each member still spreads
        its own passes over the cores (:func:`agegender.engines.threads.parallel_map`); the results are the same as
        one after the other.
        One-face astronaut on the 2-core AMD EPYC Zen 5, 30 alternating rounds: 44.2 → 42.4 ms idle, the same
        (64.4 / 64.5 ms) beside a training job (docs/performance.md)."""
        others = [self._others.submit(call, i, m) for i, m in enumerate(self.members[1:], start=1)]
        try:
            first = call(0, self.members[0])
        finally:
            done = [f.exception() for f in others]  # wait for every member whatever happened to the first
        failed = next((e for e in done if e is not None), None)
        if failed is not None:
            raise failed
        return [first] + [f.result() for f in others]

    def _scale_tta(self, member: Estimator, asked: ScaleTTA | None) -> ScaleTTA | None:
        """A call's scale views for ``member``: as asked where the panel validated its own views; else the view set
        it was validated with (``"all"`` would add views nobody measured), or none where the call asks for none."""
        if self.views[member.model_name] == "validated" or asked is False:
            return asked
        return member.scale_tta

    def predict_crops(self, faces: Sequence[ImageInput], framing: ChipFraming = "detect",
                      keep_crops: bool = False, scale_tta: ScaleTTA | None = None) -> list[Face]:
        """:meth:`Estimator.predict_crops` for the panel: one framing of each chip, every model on it."""
        framed = self.primary.frame_chips(faces, framing)
        return _attach(self._each_member(lambda i, m: m.predict_framed(
            framed, keep_crops=keep_crops and i == 0, scale_tta=self._scale_tta(m, scale_tta))))

    def with_groups(self, faces: list[Face], groups: str | GroupPreset | Sequence[int]) -> list[Face]:
        return self.primary.with_groups(faces, groups)

    def describe_policy(self, threshold: int, buffer: int | None = None) -> str:
        """"efficientnet_lite0 ≥ 18 + 12 and resnet50 ≥ 18 + 13" for the CLI and the page."""
        from agegender.assurance.age_check import member_buffer

        first = self.primary.validated_buffers
        return " and ".join(f"{m.model_name} ≥ {threshold} + {member_buffer(m.validated_buffers, first, threshold, buffer)}"
                            for m in self.members)

    def info(self) -> dict[str, Any]:
        return {"consensus": self.models, "policy": self.policy, "members": [m.info() for m in self.members]}

    def close(self) -> None:
        self._others.shutdown(wait=True)
        for member in self.members:
            member.close()


def _attach(panels: list[list[Face]]) -> list[Face]:
    """The first model's faces, each with the same-index faces of the other models as second opinions."""
    first, others = panels[0], panels[1:]
    for i, face in enumerate(first):
        face.second_opinions = tuple(p[i] for p in others)
    return first
