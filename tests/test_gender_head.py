"""The gender-head refit (``train.gender_head``, issue 27): the features it reads are the ones the bundled head reads,
its fit learns, and its paired test counts what a candidate fixes and breaks."""

from __future__ import annotations

import numpy as np
import pytest

from agegender.crops.align import crop_face
from agegender.detection.detector import FaceDetector
from agegender.weights import load_state_dict, model_entry, onnx_entry, verified_bytes


@pytest.fixture(scope="module")
def astronaut_views(astronaut) -> np.ndarray:
    detector = FaceDetector("short")
    (det,) = detector.detect(astronaut)
    detector.close()
    views = [crop_face(astronaut, det, size=160, context=c) for c in (0.9, 1.0, 1.1)]
    return np.stack(views + [v[:, ::-1] for v in views])


def test_features_are_the_gender_heads_input(astronaut_views):
    pytest.importorskip("torch")
    from train.gender_head import feature_session, run

    name, _ = model_entry("efficientnet_lite0")
    sess, feature_name = feature_session(verified_bytes(onnx_entry(name)[0]))
    age, p_female, features = run(sess, feature_name, astronaut_views)
    state = load_state_dict(name)
    w, b = state["gender_head.weight"].numpy().reshape(-1), float(state["gender_head.bias"])
    assert features.shape == (6, w.size) and np.allclose(age.sum(1), 1, atol=1e-4)
    # the bundled head applied to these features gives the graph's own P(female): the refit starts from the truth
    np.testing.assert_allclose(1 / (1 + np.exp(-(features @ w + b))), p_female, atol=1e-4)
    assert p_female.mean() > 0.5  # and the astronaut (Eileen Collins) reads as a woman


def test_fit_learns_a_direction_and_the_paired_test_counts_faces():
    pytest.importorskip("torch")
    from train.gender_head import fit, paired

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    x[:, 3] += 2.0 * (2 * y - 1)  # feature 3 carries the label
    w, b = fit(x, x, y, 1e-4, 0.0, (np.zeros(8, np.float32), 0.0))  # degraded copies weighted 0
    assert int(np.argmax(np.abs(w))) == 3 and w[3] > 0
    assert (((x @ w + b) > 0) == y).mean() > 0.95
    faces = [("utkface", int(g), f[None]) for g, f in zip(y, x)]
    flipped = (-w, -b)  # wrong on almost every face
    result = paired(faces, flipped, (w, b))
    assert result["fixed"] > 500 and result["broken"] < 30 and result["mcnemar_p"] < 1e-6
    assert paired(faces, (w, b), (w, b)) == {"fixed": 0, "broken": 0, "mcnemar_p": 1.0}
