"""agegender: find every face in a photo and estimate its age (a distribution over 0-100) and gender.

    >>> from agegender import Estimator
    >>> faces = Estimator().predict("group.jpg")
    >>> faces[0].age, faces[0].gender, faces[0].groups

The names below are imported on first use (PEP 562), so ``import agegender`` and ``agegender --help`` stay fast:
MediaPipe, OpenCV and onnxruntime load only when an ``Estimator`` (or ``load_image``…) is first touched.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# onnxruntime ≥ 1.30 starts a telemetry session at import that writes `.ses` and `mat-debug-<pid>.log` into
# $TMPDIR; this package writes nothing to disk on its own, so it switches that off before onnxruntime loads.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from agegender import _moved  # noqa: E402

_moved.install()  # agegender.imageio, agegender.age_check … (the paths before the packages) keep importing

# ``annotate`` is imported eagerly: it shares its name with its submodule, and once ``agegender.annotate`` (the
# module) is imported anywhere, the package attribute would be the module and __getattr__ would never run.
from agegender.annotate import annotate  # noqa: E402  (light: OpenCV is imported when a picture is drawn)

_EXPORTS = {
    "AgeGenderError": ".errors", "ImageTooLargeError": ".errors",
    "InvalidImageError": ".errors", "WeightsError": ".errors", "Estimator": ".estimator", "Face": ".face",
    "ConsensusEstimator": ".assurance.consensus", "PRESETS": ".groups", "get_preset": ".groups", "load_image": ".io.images",
}

__all__ = sorted([*_EXPORTS, "annotate", "__version__"])

if TYPE_CHECKING:  # pragma: no cover
    from agegender.errors import AgeGenderError, ImageTooLargeError, InvalidImageError, WeightsError
    from agegender.assurance.consensus import ConsensusEstimator
    from agegender.estimator import Estimator
    from agegender.face import Face
    from agegender.groups import PRESETS, get_preset
    from agegender.io.images import load_image


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agegender' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
