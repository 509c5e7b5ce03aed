"""agegender: find every face in a photo and estimate its age (a distribution over 0-100) and gender.

    >>> from agegender import Estimator
    >>> faces = Estimator().predict("group.jpg")
    >>> faces[0].age, faces[0].gender, faces[0].groups
"""

from __future__ import annotations

__version__ = "0.1.0"

from .annotate import annotate
from .errors import AgeGenderError, ImageTooLargeError, InvalidImageError, WeightsError
from .estimator import Estimator
from .face import Face
from .groups import PRESETS, get_preset
from .imageio import load_image

__all__ = [
    "AgeGenderError", "Estimator", "Face", "ImageTooLargeError", "InvalidImageError", "PRESETS", "WeightsError",
    "__version__", "annotate", "get_preset", "load_image",
]
