"""agegender.crops.chips: which face an image is about, and how a face chip is framed (as the training crops were)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from agegender.crops.chips import CHIP_PAD, detect_main_face, frame_chip, main_face
from agegender.crops.align import chip_detection
from agegender.detection.detector import FaceDetector


@pytest.fixture(scope="module")
def detector():
    det = FaceDetector("auto")
    yield det
    det.close()


def _box(x1, y1, x2, y2):
    return SimpleNamespace(box=(x1, y1, x2, y2))


def test_main_face_prefers_a_central_face_over_a_slightly_larger_one_in_the_corner():
    centre, corner = _box(450, 450, 550, 550), _box(0, 0, 110, 110)
    assert main_face([corner, centre], (1000, 1000)) is centre
    huge_corner = _box(0, 0, 300, 300)  # far larger wins despite being off-centre
    assert main_face([centre, huge_corner], (1000, 1000)) is huge_corner
    assert main_face([], (1000, 1000)) is None


def test_detect_main_face_is_in_the_unpadded_images_coordinates(astronaut, detector):
    region = np.ascontiguousarray(astronaut[30:230, 130:330])  # a 200 px chip around her face
    on_photo = main_face(detector.detect(astronaut), astronaut.shape)
    found = detect_main_face(region, detector, pad=int(CHIP_PAD * 200))
    assert found is not None and found.score > 0.5
    # The same face as in the full photo, moved by the chip's offset. The detector sees other context (and "auto"
    # may answer with the other BlazeFace model, framed differently), so compare centres and sizes loosely.
    expected = np.array(on_photo.box) - np.array([130, 30, 130, 30])
    centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])  # noqa: E731
    np.testing.assert_allclose(centre(found.box), centre(expected), atol=0.1 * on_photo.width)
    assert 0.8 < found.width / on_photo.width < 1.25
    eyes = found.keypoints[:2].mean(0) - (on_photo.keypoints[:2].mean(0) - np.float32([130, 30]))
    assert np.hypot(*eyes) < 0.1 * on_photo.width

def test_frame_chip_detects_then_falls_back_to_the_template(astronaut, coffee, detector):
    region = np.ascontiguousarray(astronaut[30:230, 130:330])
    framed = frame_chip(region, detector)
    assert framed.image is region and framed.detection.score > 0.5 and framed.reported is framed.detection
    template = frame_chip(region, None, "template")
    assert template.detection.score == 1.0 and template.detection.box == chip_detection(200).box
    missed = frame_chip(coffee, detector)  # no face in a cup of coffee
    assert missed.detection.score == 0.0 and missed.image.shape == (200, 200, 3)
    h, w = coffee.shape[:2]
    np.testing.assert_allclose(missed.reported.box, np.array(chip_detection(200).box) * ([w / 200, h / 200] * 2))
    with pytest.raises(ValueError, match="framing"):
        frame_chip(region, detector, "aligned")
    with pytest.raises(ValueError, match="detector"):
        frame_chip(region, None, "detect")
