"""Inference engines: uint8 face crops in, age distribution and P(female) out.

An engine runs one network on a batch of crops; everything before (detection, cropping, test-time views) and
after (averaging views, intervals, age groups) lives in :class:`agegender.Estimator` and is the same for every
engine. ``onnx`` (onnxruntime) is the default where the model's ``.onnx`` graph is bundled: on the 2-core CPU it
is several times faster than torch eager and holds up far better when other programs share the cores; ``torch``
runs any checkpoint (untrained networks in tests, freshly trained weights, GPUs) and needs the ``[torch]`` extra.
"""

from agegender.engines.base import ENGINE_NAMES, Engine, EngineOutput, onnxruntime_available, torch_available
from agegender.engines.threads import inference_threads

__all__ = ["ENGINE_NAMES", "Engine", "EngineOutput", "inference_threads", "onnxruntime_available",
           "torch_available"]
