"""The onnxruntime engine, set up as onnxruntime's own CPU examples do: one ``InferenceSession`` per model,
shared by all threads (``run`` is thread-safe), with explicit session options.

Options and why (measured, see :mod:`agegender.engines.threads` and docs/performance.md *Benchmarks*):
- ``intra_op_num_threads`` = :func:`inference_threads` (1), ``inter_op_num_threads`` = 1 and sequential execution:
  the graphs are a single chain of convolutions. A batch is instead split into one part per core, run side by
  side on the shared workers (``session.run`` is thread-safe): no barrier per layer, which a busy CPU punishes
  (:mod:`agegender.engines.threads`).
- ``session.intra_op.allow_spinning = 0``: where ``AGEGENDER_THREADS`` asks for an intra-op pool, its idle
  workers sleep instead of spinning, so a CPU shared with other work is not made busier by us waiting.
- ``ORT_ENABLE_ALL`` graph optimisations: folds the float16→float32 weight casts and BatchNorms into constant
  convolution weights and picks the blocked (NCHWc) convolution kernels for AVX2.
The model bytes come verified from :func:`agegender.weights.verified_bytes` (one read, hashed, then parsed).
"""

from __future__ import annotations

import numpy as np

from agegender.errors import WeightsError
from agegender.engines.base import EngineOutput
from agegender.engines import threads as thread_policy
from agegender.engines.threads import batch_parts, inference_threads, parallel_map

INPUT_NAME = "crops"
OUTPUT_NAMES = ("age_probs", "p_female")


def session_options(threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or inference_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: no per-node placement notes on stderr
    return options


class OnnxEngine:
    """Runs an exported :class:`agegender.models.probabilities.ProbabilityModel` graph."""

    name = "onnx"

    def __init__(self, model_bytes: bytes, input_size: int, source: str = "", precision: str = "float32",
                 threads: int | None = None, device: str = "cpu"):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.threads = threads or inference_threads()
        try:
            self.session = ort.InferenceSession(model_bytes, session_options(self.threads), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise WeightsError(f"{source or 'ONNX model'} could not be loaded by onnxruntime: {exc}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or [o.name for o in self.session.get_outputs()] != list(
                OUTPUT_NAMES):
            raise WeightsError(f"{source}: not an agegender graph (expects input {INPUT_NAME!r}, outputs "
                               f"{OUTPUT_NAMES})")
        self.input_size = int(input_size)
        self.source = source
        self.precision = precision
        self.providers = self.session.get_providers()
        self.split_batches = self.providers[0] == "CPUExecutionProvider"  # a GPU wants the whole batch at once
        # single-threaded CPU passes: a caller with many images hands them over in chunks, run side by side
        self.parallel_chunks = self.split_batches and self.threads == 1

    def run(self, crops: np.ndarray) -> EngineOutput:
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        # Inside a worker (Estimator.predict_batch hands each worker its own chunk) the chunk is one pass.
        split = self.split_batches and not thread_policy.in_pool()
        parts = batch_parts(len(crops), self.threads) if split else [slice(None)]
        if len(parts) == 1:
            return self._run_part(crops)
        outputs = parallel_map(lambda part: self._run_part(crops[part]), parts)
        return (np.concatenate([age for age, _ in outputs]), np.concatenate([female for _, female in outputs]))

    def _run_part(self, crops: np.ndarray) -> EngineOutput:
        with thread_policy.INFERENCE_SLOTS:
            age_probs, p_female = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: crops})
        return age_probs, p_female

    def describe(self) -> dict:
        return {"engine": self.name, "precision": self.precision, "threads": self.threads,
                "batch_parts": len(batch_parts(64, self.threads)) if self.split_batches else 1, "file": self.source,
                "providers": self.providers}


def graph_input_size(model_bytes: bytes, source: str = "") -> int:
    """The crop side S of a graph whose input is (batch, S, S, 3), read without building a session."""
    try:
        import onnx

        dims = onnx.load_from_string(model_bytes).graph.input[0].type.tensor_type.shape.dim
        size = int(dims[1].dim_value)
    except Exception:
        size = 0
    if size <= 0:
        raise WeightsError(f"{source or 'ONNX model'}: cannot read its input size (expects (batch, S, S, 3))")
    return size
