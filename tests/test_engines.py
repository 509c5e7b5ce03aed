"""Inference engines: onnxruntime and torch compute the same probabilities from the same bundled weights, the
Estimator picks and forces them as documented, and the runtime works without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings

import cv2
import numpy as np
import pytest

from agegender import Estimator, WeightsError
from agegender.paths import REPO_DIR, WEIGHTS_DIR
from agegender.views import SCALE_TTA_CONTEXTS
from agegender.weights import MANIFEST_NAME, model_entry, onnx_entry, read_manifest

from conftest import data_path

BACKBONES = ("efficientnet_lite0", "resnet50")


def _bundled(backbone: str) -> None:
    found = model_entry(backbone)
    if found is None or onnx_entry(found[0]) is None:
        pytest.skip(f"no {backbone} with an ONNX graph is bundled")


@pytest.fixture(scope="module")
def engines():
    """(onnx, torch) Estimators per bundled backbone, built once."""
    built = {}
    # float32: the graph torch is compared with (a CPU with VNNI/AMX would otherwise run the Lite0's int8 graph)
    yield lambda b: built.setdefault(b, (Estimator(model=b, engine="onnx", detector="auto", precision="float32"),
                                         Estimator(model=b, engine="torch", detector="auto")))
    for pair in built.values():
        for est in pair:
            est.close()


def _real_face_crops(est: Estimator, astronaut: np.ndarray) -> np.ndarray:
    """The calibrated crops (three framings each) of the astronaut and, with the data, of a group photo."""
    images = [astronaut]
    try:
        images.append(cv2.imread(str(data_path("group_photos", "dlib_examples_faces", "bald_guys.jpg")))[..., ::-1])
    except pytest.skip.Exception:
        pass
    views = []
    for rgb in images:
        rgb = np.ascontiguousarray(rgb)
        for det in est.detector.detect(rgb)[:8]:
            views.append(est._crops([(rgb, det)], SCALE_TTA_CONTEXTS)[0])  # every framing
    return np.concatenate(views)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_onnx_and_torch_give_the_same_probabilities_on_real_faces(backbone, engines, astronaut):
    _bundled(backbone)
    onnx_est, torch_est = engines(backbone)
    assert onnx_est.engine_name == "onnx" and torch_est.engine_name == "torch"
    crops = _real_face_crops(onnx_est, astronaut)
    assert len(crops) >= 3
    onnx_age, onnx_female = onnx_est.engine.run(crops)
    torch_age, torch_female = torch_est.engine.run(crops)
    assert np.abs(onnx_age - torch_age).max() <= 1e-4
    assert np.abs(onnx_female - torch_female).max() <= 1e-4
    # The outputs are real distributions that differ between faces (the comparison is not of constants).
    np.testing.assert_allclose(onnx_age.sum(1), 1.0, atol=1e-5)
    assert np.abs(onnx_age[0] - onnx_age[-1]).sum() > 1e-3
    # And the whole pipeline (detection, TTA, intervals) agrees through either engine.
    a, b = onnx_est.predict(astronaut)[0], torch_est.predict(astronaut)[0]
    assert a.box == b.box and abs(a.age - b.age) < 1e-3 and abs(a.p_female - b.p_female) < 1e-4


def test_a_batch_split_across_cores_equals_one_pass(engines, astronaut, monkeypatch):
    """The onnx engine runs a batch as one single-threaded part per core (agegender.engines.threads); the parts
    must come back in order and equal one pass over the whole batch."""
    from agegender.engines import threads

    _bundled("efficientnet_lite0")
    engine = engines("efficientnet_lite0")[0].engine
    crops = _real_face_crops(engines("efficientnet_lite0")[0], astronaut)
    whole = engine._run_part(np.ascontiguousarray(crops))
    monkeypatch.setattr(threads, "concurrent_passes", lambda: 3)
    assert len(threads.batch_parts(len(crops), engine.threads)) == 3
    split = engine.run(crops)
    for a, b in zip(split, whole):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(split[0][0] - split[0][-1]).sum() > 1e-3  # different faces, so an order mix-up would show


def test_auto_prefers_the_bundled_onnx_graph(astronaut):
    _bundled("efficientnet_lite0")
    est = Estimator()
    try:
        info = est.info()
        assert est.engine_name == "onnx" and info["engine"]["engine"] == "onnx"
        assert info["weights"]["onnx_file"].endswith(".onnx") and info["engine"]["threads"] >= 1
        with pytest.raises(AttributeError, match="onnx engine"):
            est.net  # noqa: B018 - the torch module does not exist here
        assert len(est.predict(astronaut)) == 1
    finally:
        est.close()


def test_engine_choices_are_checked():
    with pytest.raises(ValueError, match="engine"):
        Estimator(engine="tensorrt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(WeightsError, match="onnx"):
            Estimator(model="efficientnet_lite0", weights=None, engine="onnx")
        untrained = Estimator(model="efficientnet_lite0", weights=None, detector="short")
    assert untrained.engine_name == "torch" and not untrained.trained
    untrained.close()


@pytest.fixture()
def weights_copy(tmp_path):
    wdir = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, wdir)
    return wdir


def test_a_graph_of_other_weights_is_never_used(weights_copy):
    _bundled("efficientnet_lite0")
    name, _ = model_entry("efficientnet_lite0", weights_copy)
    graph, _ = onnx_entry(name, weights_copy)
    manifest = read_manifest(weights_copy)
    manifest["files"][graph]["source_sha256"] = "0" * 64  # exported from other weights
    (weights_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert onnx_entry(name, weights_copy) is None
    est = Estimator(weights_dir=weights_copy, detector="short")
    assert est.engine_name == "torch", "auto falls back to the weights themselves"
    est.close()
    with pytest.raises(WeightsError, match="ONNX"):
        Estimator(weights_dir=weights_copy, engine="onnx", precision="float32")


def test_tampered_graph_is_refused(weights_copy):
    _bundled("efficientnet_lite0")
    graph, _ = onnx_entry(model_entry("efficientnet_lite0", weights_copy)[0], weights_copy)
    data = bytearray((weights_copy / graph).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    (weights_copy / graph).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        Estimator(weights_dir=weights_copy, engine="onnx", precision="float32")


def test_an_onnx_file_runs_as_user_weights(astronaut):
    _bundled("efficientnet_lite0")
    graph, _ = onnx_entry(model_entry("efficientnet_lite0")[0])
    est = Estimator(model="efficientnet_lite0", weights=WEIGHTS_DIR / graph, detector="short")
    # a user file: no calibration, float32, and no validated view policy (all six views)
    ref = Estimator(detector="short", calibrate=False, precision="float32", scale_tta="all")
    try:
        assert est.engine_name == "onnx" and est.input_size == ref.input_size == 160
        np.testing.assert_allclose(est.predict(astronaut)[0].age_probs, ref.predict(astronaut)[0].age_probs, atol=1e-9)
    finally:
        est.close()
        ref.close()


BLOCK_TORCH = textwrap.dedent("""
    import sys

    class _NoTorch:
        # Makes `import torch` fail as it does where torch is not installed.
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError("No module named 'torch'")
            return None

    sys.meta_path.insert(0, _NoTorch())
""")


def test_the_runtime_needs_no_torch(tmp_path, astronaut):
    """Library, ``predict`` and ``info`` with torch made unimportable (CI also runs a real torch-free venv)."""
    _bundled("efficientnet_lite0")
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), astronaut[..., ::-1])
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import json
        from agegender import Estimator
        from agegender.cli.parser import main
        faces = Estimator().predict({str(photo)!r})
        assert len(faces) == 1 and 0 < faces[0].age < 100, faces
        assert main(["info", "--json"]) == 0
        assert main(["predict", {str(photo)!r}, "--json"]) == 0
        assert "torch" not in sys.modules
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO_DIR)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")
    info = json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.index("\n}") + 2])
    assert info["engines"] == ["onnx"]


def test_untrained_without_torch_says_what_to_install():
    script = BLOCK_TORCH + textwrap.dedent("""
        import warnings
        from agegender import Estimator, WeightsError
        warnings.simplefilter("ignore")
        try:
            Estimator(model="efficientnet_lite0", weights=None)
        except WeightsError as exc:
            print(exc)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO_DIR)
    assert "agegender[torch]" in proc.stdout, proc.stdout + proc.stderr


def test_precision_choice():
    _bundled("efficientnet_lite0")
    with pytest.raises(ValueError, match="precision"):
        Estimator(precision="fp8")
    name = model_entry("efficientnet_lite0")[0]
    if onnx_entry(name, precision="int8") is None:  # Lite0's int8 graph is slower on AVX2 and is not bundled
        with pytest.raises(WeightsError, match="int8"):
            Estimator(precision="int8")
    est = Estimator(precision="float32", detector="short")
    assert est.info()["engine"]["precision"] == "float32"
    est.close()


def test_predict_batch_queues_chunks_that_each_run_as_one_pass(engines, astronaut, monkeypatch):
    """With single-threaded onnx passes, Estimator.predict_batch queues every chunk of at most CHUNK_VIEWS views
    at once on the per-core workers, a multiple of the workers of near-equal size; each chunk is one session run (not
    split again), every view and mirror runs once, and the averages equal the views run one by one."""
    from agegender.engines import threads
    from agegender.estimator import CHUNK_VIEWS

    _bundled("efficientnet_lite0")
    if threads.concurrent_passes() < 2:
        pytest.skip("one core: chunks run inline")
    est = engines("efficientnet_lite0")[0]
    assert est.engine.parallel_chunks
    monkeypatch.setattr(threads, "pass_width", threads.concurrent_passes)  # an idle CPU, whatever else runs now
    crops = _real_face_crops(est, astronaut).reshape(-1, len(SCALE_TTA_CONTEXTS), est.input_size, est.input_size, 3)
    calls = []
    original = est.engine._run_part
    monkeypatch.setattr(est.engine, "_run_part", lambda x: calls.append((len(x), threads.in_pool())) or original(x))
    age, female = est.predict_batch(crops)
    views = crops.size // (est.input_size**2 * 3) * 2  # every framing and its mirror
    workers = threads.concurrent_passes()
    sizes = [n for n, _ in calls]
    assert sum(sizes) == views and max(sizes) <= CHUNK_VIEWS and max(sizes) - min(sizes) <= 1
    assert all(in_pool for _, in_pool in calls) and len(calls) == workers * -(-views // (workers * CHUNK_VIEWS))
    flat = crops.reshape(-1, est.input_size, est.input_size, 3)
    one_by_one = [original(np.ascontiguousarray(v[None])) for v in np.concatenate([flat, flat[:, :, ::-1]])]
    want_age = np.stack([a[0] for a, _ in one_by_one]).reshape(2, len(crops), -1, age.shape[1]).mean((0, 2))
    want_female = np.array([f[0] for _, f in one_by_one]).reshape(2, len(crops), -1).mean((0, 2))
    np.testing.assert_allclose(age, want_age, atol=1e-5)
    np.testing.assert_allclose(female, want_female, atol=1e-5)
    calls.clear()
    est.predict_batch(crops[:1, 1])  # one face, two views: one chunk per core, not one chunk of two
    assert [n for n, _ in calls] == [1, 1]
    calls.clear()
    monkeypatch.setattr(threads, "pass_width", lambda: 2)
    est.predict_batch(np.repeat(crops[:1, 1], 14, axis=0))  # 28 views: 7 + 7 + 7 + 7, no worker left idle at the end
    assert sorted(n for n, _ in calls) == [7, 7, 7, 7]
    calls.clear()
    monkeypatch.setattr(threads, "pass_width", lambda: 4)  # a busy CPU: two workers per core, four chunks in flight
    est.predict_batch(np.repeat(crops[:1, 1], 14, axis=0))
    assert sorted(n for n, _ in calls) == [7, 7, 7, 7]
    calls.clear()
    est.predict_batch(np.repeat(crops[:1, 1], 20, axis=0))  # 40 views: eight chunks of 5, not 8 + 8 + 8 + 8 + 8
    assert sorted(n for n, _ in calls) == [5] * 8
