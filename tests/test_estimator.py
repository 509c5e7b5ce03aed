"""Estimator end to end: faces with every field, batching, face chips, weights errors, thread safety.

The shared estimator is untrained (see conftest.py): these tests check structure and consistency, not accuracy,
and hold whether or not trained weights are bundled.
"""

from __future__ import annotations

import json
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image

from agegender import AgeGenderError, Estimator, Face, WeightsError
from agegender.crops.align import chip_detection, crop_face
from agegender.estimator import MAX_FORWARD_BATCH, SCALE_TTA_CONTEXTS
from agegender.detection.detector import MODEL_FILES
from agegender.groups import PRESETS
from agegender.io.images import load_image
from agegender.paths import WEIGHTS_DIR
from agegender.weights import read_manifest, write_manifest

from conftest import utkface_chips

TO_DICT_KEYS = {"index", "box", "score", "keypoints", "age", "age_low", "age_high", "age_group", "groups", "gender",
                "p_female", "gender_confidence", "p_adult"}


def check_face(face: Face, preset_labels) -> None:
    assert isinstance(face, Face)
    assert len(face.box) == 4 and all(type(v) is int for v in face.box)
    x1, y1, x2, y2 = face.box
    assert x2 > x1 and y2 > y1
    assert 0.0 <= face.score <= 1.0
    assert face.keypoints.shape == (6, 2)
    assert face.age_probs.shape == (101,)
    assert np.all(face.age_probs >= 0) and face.age_probs.sum() == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= face.age <= 100.0
    assert face.age == pytest.approx(float(np.arange(101) @ face.age_probs))
    assert 0 <= face.age_low <= face.age <= face.age_high <= 100
    assert list(face.groups) == list(preset_labels)
    assert sum(face.groups.values()) == pytest.approx(1.0, abs=1e-6)
    assert face.gender in ("female", "male")
    assert 0.0 <= face.p_female <= 1.0
    assert (face.gender == "female") == (face.p_female >= 0.5)
    assert face.gender_confidence == pytest.approx(max(face.p_female, 1 - face.p_female))
    values = [face.p_at_least(t) for t in range(-1, 103)]
    assert values[0] == pytest.approx(1.0) and values[-1] == 0.0
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))
    label, p = face.top_group
    assert p == max(face.groups.values()) and face.groups[label] == p


def test_astronaut_one_face_with_every_field(estimator, astronaut):
    faces = estimator.predict(astronaut)
    assert len(faces) == 1
    face = faces[0]
    check_face(face, estimator.preset.labels)
    assert face.index == 1
    x1, y1, x2, y2 = face.box
    assert 150 <= x1 <= 200 and 250 <= x2 <= 300 and 45 <= y1 <= 100 and 150 <= y2 <= 200
    assert face.crop is not None and face.crop.shape == (estimator.input_size, estimator.input_size, 3)
    d = face.to_dict()
    assert set(d) == TO_DICT_KEYS
    round_trip = json.loads(json.dumps(d))
    assert round_trip["box"] == list(face.box) and round_trip["gender"] == face.gender
    assert round_trip["age_group"] == face.top_group[0]
    assert list(round_trip["groups"]) == list(estimator.preset.labels)
    assert len(round_trip["keypoints"]) == 6
    assert round_trip["p_adult"] == pytest.approx(face.p_at_least(18), abs=1e-4)
    full = face.to_dict(include_age_probs=True)
    assert set(full) == TO_DICT_KEYS | {"age_probs"} and len(json.loads(json.dumps(full))["age_probs"]) == 101
    assert estimator.predict(astronaut, keep_crops=False)[0].crop is None


def test_inputs_are_equivalent(estimator, astronaut, tmp_path):
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(astronaut), cv2.COLOR_RGB2BGR))
    ref = estimator.predict(astronaut)[0]
    for face in (estimator.predict(path)[0], estimator.predict(path.read_bytes())[0],
                 estimator.predict(np.ascontiguousarray(astronaut[..., ::-1]), bgr=True)[0]):
        assert face.box == ref.box
        np.testing.assert_allclose(face.age_probs, ref.age_probs, atol=1e-6)


def test_outputs_differ_between_faces(estimator, astronaut, coffee):
    """Guards the other tests: the shared untrained network must not answer the same for every input."""
    crops = np.stack([crop_face(astronaut, estimator.detector.detect(astronaut)[0], estimator.input_size),
                      cv2.resize(coffee, (estimator.input_size,) * 2)])
    probs, p_female = estimator.predict_batch(crops)
    assert np.abs(probs[0] - probs[1]).sum() > 1e-3 and abs(p_female[0] - p_female[1]) > 1e-4


def test_no_face_gives_empty_list(estimator, coffee):
    assert estimator.predict(coffee) == []


def test_mosaic_one_batched_forward_pass(estimator, mosaic, monkeypatch):
    img, layout = mosaic
    batch_calls, forward_batches = [], []
    original = estimator.predict_batch

    def spy(crops):
        batch_calls.append(len(crops))
        return original(crops)

    monkeypatch.setattr(estimator, "predict_batch", spy)
    handle = estimator.net.register_forward_hook(lambda module, args, out: forward_batches.append(args[0].shape[0]))
    try:
        faces = estimator.predict(img)
    finally:
        handle.remove()
    assert len(faces) == len(layout)
    assert batch_calls == [len(layout)], "all faces of an image go through the model in one call"
    mirrors = 2 if estimator.flip_tta else 1  # flip TTA: each face and its mirror, still in the same pass
    views = len(SCALE_TTA_CONTEXTS) if estimator.scale_tta else 1  # scale TTA: three framings of each face
    assert estimator.flip_tta and estimator.scale_tta, "flip and scale TTA are the default"
    images = mirrors * views * len(layout)
    assert sum(forward_batches) == images, "every view of every face, each through the network once"
    assert forward_batches == [min(MAX_FORWARD_BATCH, images - i) for i in range(0, images, MAX_FORWARD_BATCH)]
    assert [f.index for f in faces] == list(range(1, len(layout) + 1))
    assert [f.box[0] for f in faces] == sorted(f.box[0] for f in faces)
    for f in faces:
        check_face(f, estimator.preset.labels)
    # Batching does not change a face's result: each crop alone gives the same numbers.
    for f in (lambda plain: (plain[0], plain[-1]))(estimator.predict(img, scale_tta=False)):
        alone, p_female = estimator.predict_batch(f.crop[None])
        np.testing.assert_allclose(alone[0], f.age_probs, atol=1e-5)
        assert p_female[0] == pytest.approx(f.p_female, abs=1e-5)


def test_with_groups_regroups_without_the_model(estimator, astronaut, monkeypatch):
    faces = estimator.predict(astronaut)
    monkeypatch.setattr(estimator, "predict_batch", lambda crops: pytest.fail("model must not run"))
    regrouped = estimator.with_groups(faces, "life4")
    assert list(regrouped[0].groups) == list(PRESETS["life4"].labels)
    assert regrouped[0].groups["adult (20-59)"] == pytest.approx(float(faces[0].age_probs[20:60].sum()))


def test_custom_groups_estimator_labels(astronaut):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        est = Estimator(model="efficientnet_lite0", weights=None, detector="full", groups="0,13,18,65")
    try:
        face = est.predict(astronaut)[0]
        check_face(face, ("0-12", "13-17", "18-64", "65+"))
        assert est.info()["groups"] == "custom"
    finally:
        est.close()
    with pytest.raises(ValueError, match="fairface9"):
        Estimator(model="efficientnet_lite0", weights=None, groups="teenagers")


def test_predict_detections_and_empty(estimator, astronaut):
    rgb, dets = estimator.detect(astronaut)
    assert rgb.shape == astronaut.shape and len(dets) == 1
    faces = estimator.predict_detections(rgb, dets)
    np.testing.assert_allclose(faces[0].age_probs, estimator.predict(astronaut)[0].age_probs, atol=1e-9)
    assert estimator.predict_detections(rgb, []) == []
    probs, p_female = estimator.predict_batch(np.zeros((0, 128, 128, 3), np.uint8))
    assert probs.shape == (0, 101) and p_female.shape == (0,)


# ------------------------------------------------------------------------------------------------ face chips
@pytest.mark.data
def test_predict_crops_template_framing_on_utkface_chips(estimator):
    paths = utkface_chips(6)
    faces = estimator.predict_crops(paths, framing="template", keep_crops=True)
    assert len(faces) == len(paths)
    template = chip_detection(200)
    for path, face in zip(paths, faces):
        check_face(face, estimator.preset.labels)
        chip = load_image(path)
        assert chip.shape[:2] == (200, 200) and face.score == 1.0
        assert face.box == tuple(int(round(v)) for v in template.box)
        # The model saw exactly the calibrated chip template, no detection.
        np.testing.assert_array_equal(face.crop, crop_face(chip, template, estimator.input_size))
    # Same result, one at a time (batch composition does not matter) and from bytes.
    again = estimator.predict_crops([paths[2].read_bytes()], framing="template")[0]
    np.testing.assert_allclose(again.age_probs, faces[2].age_probs, atol=1e-5)


@pytest.mark.data
def test_predict_crops_frames_chips_exactly_as_the_training_crops(estimator, monkeypatch):
    """The default framing detects each chip's face, and the crop is pixel for pixel the training cache's
    (train/preprocess.py) at the inference size: the model sees at inference what it was trained on."""
    from train import preprocess

    monkeypatch.setattr(preprocess, "_detector", estimator.detector)
    paths = utkface_chips(6)
    faces = estimator.predict_crops(paths, keep_crops=True)
    assert len(faces) == len(paths)
    found = [f for f in faces if f.score > 0]
    assert len(found) >= 5, "the detector should find the face in nearly every chip"
    for path, face in zip(paths, faces):
        check_face(face, estimator.preset.labels)
        cached, how = preprocess.process((str(path), "utkface", estimator.input_size, 1.0))
        assert how == ("detected" if face.score > 0 else "chip")
        np.testing.assert_array_equal(face.crop, cached)
    for f in found:
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        assert 50 < cx < 150 and 50 < cy < 150, f"face box {f.box} should be near the chip centre"
        assert 60 < f.box[2] - f.box[0] < 260  # a tight chip's face box can be wider than the chip
    # Per chip the detector's framing is not the template's: the two crops differ.
    template = estimator.predict_crops(paths, framing="template", keep_crops=True)
    differ = [np.abs(a.crop.astype(int) - b.crop.astype(int)).mean() for a, b in zip(found, template) if a.score > 0]
    assert np.mean(differ) > 2.0


def test_predict_crops_falls_back_to_the_template_without_a_face(estimator, coffee):
    face = estimator.predict_crops([coffee], keep_crops=True)[0]
    assert face.score == 0.0
    check_face(face, estimator.preset.labels)
    h, w = coffee.shape[:2]
    x1, y1, x2, y2 = face.box  # the template box, mapped back from the 200 px chip to the input's pixels
    t = chip_detection(200).box
    assert (x1, y1, x2, y2) == tuple(int(round(v * s)) for v, s in zip(t, (w / 200, h / 200, w / 200, h / 200)))
    chip = cv2.resize(coffee, (200, 200), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(face.crop, crop_face(chip, chip_detection(200), estimator.input_size))


def test_predict_crops_any_size(estimator, astronaut):
    face_region = np.ascontiguousarray(astronaut[40:220, 140:320])  # not 200 x 200
    for framing in ("detect", "template"):
        faces = estimator.predict_crops([face_region, Image.fromarray(face_region)], framing=framing)
        assert len(faces) == 2
        np.testing.assert_allclose(faces[0].age_probs, faces[1].age_probs, atol=1e-9)
    detected = estimator.predict_crops([face_region])[0]
    assert detected.score > 0.5 and 0 <= detected.box[0] < detected.box[2] <= 180
    assert estimator.predict_crops([]) == []
    with pytest.raises(ValueError, match="framing"):
        estimator.predict_crops([face_region], framing="aligned")


# ---------------------------------------------------------------------------------------------------- weights
def _copy_weights(tmp_path):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    for f in WEIGHTS_DIR.iterdir():
        if f.is_file():
            shutil.copyfile(f, wdir / f.name)  # copyfile: the copies are writable even if the originals are not
    return wdir


def test_bundled_weights_missing_for_model_explains_what_to_do(tmp_path):
    wdir = _copy_weights(tmp_path)
    manifest = read_manifest(wdir)
    manifest["files"] = {k: v for k, v in manifest["files"].items() if v.get("kind") != "agegender"}
    manifest.pop("default_model", None)
    write_manifest(manifest, wdir)
    with pytest.raises(WeightsError) as info:
        Estimator(model="efficientnet_lite0", weights="bundled", weights_dir=wdir)
    message = str(info.value)
    assert "efficientnet_lite0" in message and "MANIFEST.json" in message
    assert "python -m train" in message and "weights=None" in message
    assert isinstance(info.value, AgeGenderError)


@pytest.mark.parametrize("mode", ["short", "full"])
def test_corrupted_detector_weights_are_refused(tmp_path, mode):
    wdir = _copy_weights(tmp_path)
    target = wdir / MODEL_FILES[mode]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256") as info:
        Estimator(model="efficientnet_lite0", weights=None, detector=mode, weights_dir=wdir)
    assert MODEL_FILES[mode] in str(info.value)


def test_missing_detector_file_is_refused(tmp_path):
    wdir = _copy_weights(tmp_path)
    (wdir / MODEL_FILES["full"]).unlink()
    with pytest.raises(WeightsError, match="missing"):
        Estimator(model="efficientnet_lite0", weights=None, detector="full", weights_dir=wdir)


def test_bundled_age_gender_models_load(tmp_path, astronaut):
    """Every trained model in the manifest loads strictly into its architecture and predicts (skipped until
    trained weights are bundled)."""
    entries = [(n, e) for n, e in read_manifest()["files"].items() if e.get("kind") == "agegender"]
    if not entries:
        pytest.skip("no trained age/gender weights bundled in weights/ yet")
    for name, entry in entries:
        est = Estimator(model=entry["backbone"], weights="bundled", detector="full")
        try:
            assert est.trained and est.weights_info["file"] == name
            faces = est.predict(astronaut)
            assert len(faces) == 1
            check_face(faces[0], est.preset.labels)
        finally:
            est.close()


def test_flip_tta_averages_each_crop_with_its_mirror(estimator, astronaut, monkeypatch):
    crop = estimator.predict(astronaut)[0].crop
    mirror = np.ascontiguousarray(crop[:, ::-1])
    monkeypatch.setattr(estimator, "flip_tta", False)
    assert estimator.info()["flip_tta"] is False
    plain_probs, plain_female = estimator.predict_batch(np.stack([crop, mirror]))
    assert np.abs(plain_probs[0] - plain_probs[1]).max() > 1e-4, "the mirror must change the output for this to test"
    monkeypatch.setattr(estimator, "flip_tta", True)
    probs, female = estimator.predict_batch(np.stack([crop, mirror]))
    assert probs.shape == (2, 101) and female.shape == (2,)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs[0], plain_probs.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(female[0], plain_female.mean(), atol=1e-6)
    np.testing.assert_allclose(probs[1], probs[0], atol=1e-6)  # a face and its mirror: the same TTA answer
    assert estimator.info()["flip_tta"] is True


def test_scale_tta_averages_three_framings_of_each_face(estimator, astronaut, mosaic):
    img, _ = mosaic
    dets = estimator.detector.detect(img)[:2]
    assert len(dets) == 2
    views = [np.stack([crop_face(img, d, estimator.input_size, context=c) for c in SCALE_TTA_CONTEXTS]) for d in dets]
    faces = estimator.predict_detections(img, dets)  # the default: scale (and flip) TTA
    assert estimator.info()["scale_tta"] is True
    for face, face_views in zip(faces, views):
        alone = [estimator.predict_batch(v[None]) for v in face_views]  # each framing alone (flip TTA on)
        np.testing.assert_allclose(face.age_probs, np.mean([a[0][0] for a in alone], axis=0), atol=1e-5)
        assert face.p_female == pytest.approx(np.mean([a[1][0] for a in alone]), abs=1e-5)
        np.testing.assert_allclose(face.age_probs.sum(), 1.0, atol=1e-6)
        np.testing.assert_array_equal(face.crop, face_views[1])  # the crop shown is the calibrated one
        ages = [float(a[0][0] @ np.arange(101)) for a in alone]
        assert max(ages) - min(ages) > 0.05, "the framings must change the output for this to test"
        # scale_tta=False for one call (the live camera): the calibrated framing alone; the estimator is unchanged.
        plain = estimator.predict_detections(img, [dets[faces.index(face)]], scale_tta=False)[0]
        np.testing.assert_allclose(plain.age_probs, alone[1][0][0], atol=1e-5)
    assert estimator.scale_tta is True
    # A (N, V, S, S, 3) batch equals each face's views alone.
    both, _ = estimator.predict_batch(np.stack(views))
    np.testing.assert_allclose(both, np.stack([f.age_probs for f in faces]), atol=1e-5)


# ------------------------------------------------------------------------------------------------ threads
def test_concurrent_predict_matches_serial(estimator, astronaut, mosaic, coffee):
    base = np.ascontiguousarray(astronaut)
    images = [
        base,
        np.ascontiguousarray(base[:, ::-1]),
        cv2.resize(base, (384, 384), interpolation=cv2.INTER_AREA),
        cv2.warpAffine(base, cv2.getRotationMatrix2D((224, 120), 12, 1.0), (512, 512), borderMode=cv2.BORDER_REPLICATE),
        np.ascontiguousarray(mosaic[0][:512, :1024]),
        cv2.resize(base, (640, 640), interpolation=cv2.INTER_LINEAR),
        np.ascontiguousarray(base[20:, 60:]),
        cv2.convertScaleAbs(base, alpha=0.8, beta=10),
    ]
    serial = [estimator.predict(img) for img in images]
    assert all(len(faces) >= 1 for faces in serial)
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(estimator.predict, images))
    ages = [f.age for faces in serial for f in faces]
    assert max(ages) - min(ages) > 1e-3, "images must give different answers for the comparison to mean anything"
    for i, (a, b) in enumerate(zip(serial, concurrent)):
        assert [f.box for f in a] == [f.box for f in b], f"image {i}: boxes differ"
        for fa, fb in zip(a, b):
            assert fb.age == pytest.approx(fa.age, abs=1e-5)
            np.testing.assert_allclose(fb.age_probs, fa.age_probs, atol=1e-5)
            assert fb.p_female == pytest.approx(fa.p_female, abs=1e-5)
            np.testing.assert_array_equal(fb.crop, fa.crop)


def test_many_faces_are_cropped_and_run_a_group_at_a_time(estimator, mosaic, monkeypatch):
    """Memory stays bounded for photos with hundreds of faces: crops are built FACES_PER_CALL faces at a time and
    each forward pass's input just before it runs; the numbers are those of one big call."""
    import agegender.estimator as estimator_module

    img, layout = mosaic
    reference = estimator.predict(img)
    calls = []
    original = estimator.predict_batch
    monkeypatch.setattr(estimator_module, "FACES_PER_CALL", 2)
    monkeypatch.setattr(estimator, "predict_batch", lambda crops: calls.append(len(crops)) or original(crops))
    grouped = estimator.predict(img)
    assert calls == [2] * (len(layout) // 2) + ([1] if len(layout) % 2 else [])
    for a, b in zip(reference, grouped):
        assert a.box == b.box
        np.testing.assert_allclose(a.age_probs, b.age_probs, atol=1e-6)


def test_inference_threads_follow_the_cores_and_the_override(monkeypatch):
    from agegender.engines import threads

    monkeypatch.delenv("AGEGENDER_THREADS", raising=False)
    assert threads.inference_threads() == 1  # one thread per pass; batches are split across the cores instead
    monkeypatch.setenv("AGEGENDER_THREADS", "3")
    assert threads.inference_threads() == 3
    assert threads.concurrent_passes() == threads.cpu_count()
    monkeypatch.setenv("AGEGENDER_THREADS", "lots")  # ignored, with the default
    assert threads.inference_threads() == 1


def test_batch_parts_cover_the_batch_once_per_core(monkeypatch):
    from agegender.engines import threads

    monkeypatch.setattr(threads, "concurrent_passes", lambda: 2)
    assert threads.batch_parts(16) == [slice(0, 8), slice(8, 16)]
    assert threads.batch_parts(15) == [slice(0, 8), slice(8, 15)]
    assert threads.batch_parts(1) == [slice(0, 1)]  # never an empty part
    assert threads.batch_parts(16, threads=2) == [slice(0, 16)]  # an intra-op pool of its own: no split
    monkeypatch.setattr(threads, "concurrent_passes", lambda: 3)
    for n in range(1, 40):
        parts = threads.batch_parts(n)
        assert sum(p.stop - p.start for p in parts) == n and all(p.stop > p.start for p in parts)
        assert [p.start for p in parts[1:]] == [p.stop for p in parts[:-1]]
