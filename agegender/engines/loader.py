"""Which engine runs a model, and loading it: the bundled manifest entry (its ONNX graph or its safetensors),
a user's ``.safetensors``/``.onnx`` file, or an untrained network for tests.

Kept apart from :class:`agegender.Estimator` so the estimator is about images and faces, and this module about
weights: every rule of engine choice (``auto`` → onnxruntime where the graph is bundled and onnxruntime is
installed, else torch), precision (an int8 graph only where ``train.quantize`` bundled one and :mod:`agegender.engines.precision` finds it
faster on this CPU) and verification
(sha256 of the bytes that are loaded) lives here once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agegender.errors import WeightsError
from agegender.weights import bundled_backbones, default_backbone, model_entry, onnx_entry, verified_bytes
from agegender.engines import precision as precision_policy
from agegender.engines.base import Engine, onnxruntime_available, torch_available

PRECISIONS = ("auto", "float32", "int8")


@dataclass
class LoadedModel:
    engine: Engine
    weights_info: dict[str, Any] = field(default_factory=dict)
    trained: bool = False


class _Loader:
    """One load: the settings and what was found on the way (the manifest entry, the weights' file)."""

    def __init__(self, model_name: str, precision: str, weights_dir: str | Path | None, device: str):
        self.model_name, self.precision, self.weights_dir, self.device = model_name, precision, weights_dir, device
        self.weights_info: dict[str, Any] = {}
        self.trained = False
        self._net_source: Any = None  # what net_options reads the recorded architecture from (torch engine)
        self._probed: dict[str, Engine] = {}  # engines built by the precision probe, reused for the chosen graph

    def create(self, engine: str, weights: str | Path | None) -> Engine:
        if weights is None:
            warnings.warn(f"agegender: {self.model_name} runs with random, UNTRAINED weights; its ages and genders "
                          "are meaningless (use this for tests only)", UserWarning, stacklevel=4)
            self.weights_info = {"file": None, "trained": False}
            return self._torch_engine(engine, None, None, "untrained")
        if isinstance(weights, str) and weights == "bundled":
            found = model_entry(self.model_name, self.weights_dir)
            if found is None:
                raise WeightsError(
                    f"no trained weights for {self.model_name!r} are bundled in weights/ (see MANIFEST.json). "
                    "Train them with `python -m train`, or pass weights=None for an untrained model (tests only)."
                )
            name, entry = found
            self._net_source = entry
            input_size = int(entry["input_size"]) if entry.get("input_size") else None
            self.weights_info = {"file": name, **{k: v for k, v in entry.items() if k != "metrics"},
                                 "metrics": entry.get("metrics", {})}
            use_onnx = engine == "onnx" or (engine == "auto" and onnx_entry(name, self.weights_dir) is not None
                                             and onnxruntime_available())
            graph = self._graph(name, input_size) if use_onnx or self.precision == "int8" else None
            if use_onnx:
                if graph is None:
                    raise WeightsError(f"no ONNX graph of {name} is bundled (export it with python -m train.export)")
                self.weights_info["onnx_file"] = graph[0]
                result = self._probed.get(graph[0]) or self._onnx_engine(
                    verified_bytes(graph[0], self.weights_dir), input_size, graph[0],
                    graph[1].get("precision", "float32"))
                self._probed.clear()
            else:
                from agegender.weights import load_state_dict

                self._require_torch(engine)
                result = self._torch_engine(engine, load_state_dict(name, self.weights_dir), input_size, name)
        else:
            path = Path(weights)
            if not path.is_file():
                raise WeightsError(f"{path}: weights file not found")
            self.weights_info = {"file": str(path)}
            if path.suffix.lower() == ".onnx":
                if engine == "torch":
                    raise WeightsError(f"{path} is an ONNX graph: it runs with engine='onnx' (or 'auto')")
                result = self._onnx_engine(path.read_bytes(), None, str(path))
            else:
                self._net_source = path
                state, input_size = _read_safetensors(path)
                result = self._torch_engine(engine, state, input_size, str(path))
        self.trained = True
        self.weights_info["trained"] = True
        return result

    def _graph(self, model_file: str, input_size: int | None) -> tuple[str, dict] | None:
        """The bundled ONNX graph to run. ``int8`` asks for the int8 graph; ``auto`` runs it only where
        :mod:`agegender.engines.precision` says it is faster on this CPU (an int8 graph is only bundled when
        ``train.quantize`` found its validation accuracy within the rule); else the float32 graph."""
        float32 = onnx_entry(model_file, self.weights_dir, "float32")
        if self.precision == "float32":
            return float32
        int8 = onnx_entry(model_file, self.weights_dir, "int8")
        if self.precision == "int8":
            if int8 is None:
                raise WeightsError(f"no int8 graph of {model_file} is bundled")
            return int8
        if int8 is None or float32 is None:
            return float32  # int8 alone is never run by auto: it needs the probe against float32

        def make_runners():
            for graph in (float32, int8):
                self._probed[graph[0]] = self._onnx_engine(verified_bytes(graph[0], self.weights_dir), input_size,
                                                           graph[0], graph[1]["precision"])
            return self._probed[float32[0]].run, self._probed[int8[0]].run

        choice = precision_policy.choose(int8[1]["sha256"], make_runners, int(input_size or 0) or
                                         int(int8[1].get("input_size", 0)))
        self.weights_info["precision_choice"] = choice.as_dict()
        return int8 if choice.precision == "int8" else float32

    @staticmethod
    def _require_torch(engine: str) -> None:
        if not torch_available():
            hint = "" if engine == "torch" else " (no ONNX graph is bundled for this model or onnxruntime is missing)"
            raise WeightsError(f"the torch engine needs PyTorch{hint}: pip install 'agegender[torch]'")

    def _torch_engine(self, engine: str, state: dict | None, input_size: int | None, source: str):
        if engine == "onnx":
            raise WeightsError(f"{source}: only bundled models and .onnx files run with engine='onnx'")
        self._require_torch("torch")
        from agegender.engines.torch_engine import TorchEngine
        from agegender.models import AgeGenderNet, net_options

        # Input size, layout and normalisation as recorded with the weights (manifest entry or file metadata).
        options = net_options(self._net_source)
        if input_size and not options.get("input_size"):
            options["input_size"] = input_size
        net = AgeGenderNet(self.model_name, dropout=0.0, **options)
        if state is not None:
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise WeightsError(f"weights do not match the {self.model_name} architecture: {exc}") from None
        return TorchEngine(net, device=self.device, source=source)

    def _onnx_engine(self, data: bytes, input_size: int | None, source: str, precision: str = "float32"):
        if not onnxruntime_available():
            raise WeightsError("the onnx engine needs onnxruntime: pip install onnxruntime")
        from agegender.engines.onnx_engine import OnnxEngine, graph_input_size

        size = input_size or graph_input_size(data, source)
        return OnnxEngine(data, size, source=source, precision=precision, device=self.device)



def default_model(weights: str | Path | None, weights_dir: str | Path | None) -> str:
    """The manifest's default backbone; for untrained/explicit weights without one, EfficientNet-Lite0."""
    if isinstance(weights, str) and weights == "bundled":
        default = default_backbone(weights_dir)
        bundled = bundled_backbones(weights_dir)
        if default and default in bundled:
            return default
        if default:
            raise WeightsError(f"the manifest's default_model {default!r} has no bundled weights "
                               f"(bundled: {', '.join(bundled) or 'none'})")
        if bundled:
            return bundled[0]
        raise WeightsError("no trained model is bundled in weights/ (see MANIFEST.json); pass model= and "
                           "weights=None for an untrained network (tests only)")
    return "efficientnet_lite0"


def load_model(model_name: str, weights: str | Path | None, *, engine: str = "auto", precision: str = "auto",
               weights_dir: str | Path | None = None, device: str = "cpu") -> LoadedModel:
    """The engine that runs ``model_name`` with ``weights`` ("bundled", a file, or None: untrained)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    loader = _Loader(model_name, precision, weights_dir, device)
    result = loader.create(engine, weights)
    return LoadedModel(result, loader.weights_info, loader.trained)


def _read_safetensors(path: Path) -> tuple[dict, int | None]:
    """Tensors (float32) and the input size recorded by ``train.export`` in a user-given safetensors file."""
    from safetensors import safe_open
    from safetensors.torch import load

    try:
        data = path.read_bytes()
        state = {k: (t.float() if t.is_floating_point() else t) for k, t in load(data).items()}
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable safetensors file: {exc}") from None
    size = meta.get("input_size")
    return state, (int(size) if size and str(size).isdigit() else None)
