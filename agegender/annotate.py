"""Draw numbered boxes and short labels on a copy of the image (for the CLI's --annotate and the app)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from agegender.face import Face

# Okabe-Ito colours: distinguishable with the common forms of colour blindness.
FEMALE_RGB = (204, 121, 167)
MALE_RGB = (0, 114, 178)


def face_label(face: Face) -> str:
    return f"#{face.index} {face.gender[0].upper()} {face.age:.0f}"


def annotate(image: np.ndarray, faces: Sequence[Face], show_labels: bool = True) -> np.ndarray:
    """RGB copy of ``image`` with each face's numbered box and, if ``show_labels``, "#n F/M age"."""
    import cv2  # here, not at module level: ``import agegender`` stays light (agegender --help)
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    thickness = max(1, int(round(max(h, w) / 600)))
    for face in faces:
        x1, y1, x2, y2 = (int(v) for v in face.box)
        colour = FEMALE_RGB if face.gender == "female" else MALE_RGB
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = face_label(face) if show_labels else f"#{face.index}"
        scale = max(0.35, min(1.2, (x2 - x1) / 110))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thickness))
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + 4)
        tx = min(max(0, x1), max(0, w - tw - 2))
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw + 2, ty + base // 2), colour, -1)
        cv2.putText(out, text, (tx + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(1, thickness), cv2.LINE_AA)
    return out
