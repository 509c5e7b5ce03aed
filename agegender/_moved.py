"""Old module paths of agegender ≤ 0.1 (before the packages by concern) keep importing, with a warning.

``import agegender.imageio`` or ``from agegender.age_check import check`` in a user's script still works: a
meta-path finder answers the old name with the module at its new place (the same module object, so state and
monkeypatches are shared) and warns once with the new name. Nothing here is imported until an old name is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "agegender.imageio": "agegender.io.images",
    "agegender.limits": "agegender.io.limits",
    "agegender.video_io": "agegender.io.video",
    "agegender.blazeface_task": "agegender.detection.blazeface",
    "agegender.face_boxes": "agegender.detection.boxes",
    "agegender.crop": "agegender.crops.align",
    "agegender.chips": "agegender.crops.chips",
    "agegender.calibration": "agegender.assurance.calibration",
    "agegender.age_check": "agegender.assurance.age_check",
    "agegender.consensus": "agegender.assurance.consensus",
    "agegender.tracking": "agegender.video.tracking",
    "agegender.cli_check": "agegender.cli.check",
    "agegender.cli_video": "agegender.cli.video",
    "agegender.cli_options": "agegender.cli.options",
    "agegender.datasets": "agegender.evaluation.datasets",
    "agegender.evaluate": "agegender.evaluation",
    "agegender.reporting": "agegender.evaluation.report",
    "agegender.evaluation_plots": "agegender.evaluation.plots",
}
"""Old name → new name. ``agegender.detection``, ``agegender.video`` and ``agegender.cli`` are packages now and
re-export what their modules did (``agegender.cli`` its ``main`` through :mod:`agegender.cli.parser`)."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        sys.modules[module.__spec__.name] = module  # the new module, under its old name too


def install() -> None:
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
