"""Face mode's jitter setting (TWINSIGHT_FACE_JITTERS / FaceModel(jitters)): it reaches dlib, is deterministic,
is validated, keys the cache, is honoured by the worker process, and only the compared face pays for it."""
import csv

import dlib
import numpy as np
import pytest
from PIL import Image
from skimage import data

from indexer.face import DEFAULT_JITTERS, DLIB_THRESHOLD, MAX_JITTERS, FaceModel, MultipleFacesError, face_distance
from indexer import face as face_module
from indexer.face_net import MODEL_FILE, face_describer
from indexer.face_worker import jittered_chips, models_dir
from test_face import two_faces
from verify_support import DEV_DATA

FACES_DEV = DEV_DATA / "faces-dev"


@pytest.fixture(scope="module")
def astronaut():
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def plain():
    return FaceModel(in_process=True, jitters=1)


def test_jittered_chips_are_the_chip_its_mirror_then_seeded_variants(plain, astronaut):
    chip = np.asarray(plain.faces(astronaut)[0].chip)
    chips = jittered_chips(chip, 5)
    assert len(chips) == 5 and np.array_equal(chips[0], chip) and np.array_equal(chips[1], chip[:, ::-1])
    assert all(c.shape == chip.shape and c.dtype == np.uint8 for c in chips)
    assert len({c.tobytes() for c in chips}) == 5  # every pass sees a different crop
    assert all(np.array_equal(a, b) for a, b in zip(chips, jittered_chips(chip, 5)))  # the same every time
    assert len(jittered_chips(chip, 1)) == 1


def test_jitters_reach_dlib_and_give_the_same_descriptor_every_time(plain, astronaut):
    single = plain.faces(astronaut)[0]
    assert single.jitters == 1 and plain.one_face(astronaut)[0].descriptor is single.descriptor
    mirrored = FaceModel(in_process=True, jitters=2).one_face(astronaut)[0]
    dlib_net = dlib.face_recognition_model_v1(str(models_dir() / MODEL_FILE))  # dlib's own CNN, as a reference
    mirror_pass = np.asarray(dlib_net.compute_face_descriptor(np.asarray(single.chip)[:, ::-1].copy()))
    assert mirrored.jitters == 2
    np.testing.assert_allclose(mirrored.descriptor, (single.descriptor + mirror_pass) / 2, atol=1e-6)
    four = FaceModel(in_process=True, jitters=4)
    a = four.one_face(astronaut)[0].descriptor
    assert 0.01 < face_distance(a, single.descriptor) < DLIB_THRESHOLD  # moved, and still the same person
    assert np.array_equal(a, FaceModel(in_process=True, jitters=4).one_face(astronaut)[0].descriptor)  # new model
    chip = np.asarray(single.chip)
    assert np.array_equal(face_describer()(jittered_chips(chip, 4)), face_describer()(jittered_chips(chip, 4)))


@pytest.mark.parametrize("bad", [0, -1, MAX_JITTERS + 1, 2.5, "2", True])
def test_a_bad_jitters_parameter_is_refused_with_the_fix(bad):
    with pytest.raises(ValueError, match=rf"jitters={bad!r} is not valid: .*from 1 .* to {MAX_JITTERS}"):
        FaceModel(in_process=True, jitters=bad)


@pytest.mark.parametrize("text", ["0", "ten", "2.5", str(MAX_JITTERS + 1)])
def test_a_bad_jitters_variable_is_refused_naming_it(monkeypatch, text):
    monkeypatch.setenv("TWINSIGHT_FACE_JITTERS", text)
    with pytest.raises(ValueError, match=rf"TWINSIGHT_FACE_JITTERS='?{text}'? is not valid"):
        FaceModel(in_process=True)


def test_the_variable_sets_the_default_and_the_parameter_overrides_it(monkeypatch):
    monkeypatch.delenv("TWINSIGHT_FACE_JITTERS", raising=False)
    assert FaceModel(in_process=True).jitters == DEFAULT_JITTERS
    monkeypatch.setenv("TWINSIGHT_FACE_JITTERS", "3")
    assert FaceModel(in_process=True).jitters == 3
    assert FaceModel(in_process=True, jitters=1).jitters == 1
    assert "3 CNN passes" in FaceModel(in_process=True).name  # results and eval reports say which setting


def test_the_cache_never_answers_with_another_setting(astronaut):
    model = FaceModel(in_process=True, jitters=1)
    one = model.one_face(astronaut)[0]
    model.jitters = 3
    three = model.one_face(astronaut)[0]
    assert three.jitters == 3 and face_distance(one.descriptor, three.descriptor) > 0.01
    assert np.array_equal(three.descriptor, FaceModel(in_process=True, jitters=3).one_face(astronaut)[0].descriptor)
    model.jitters = 1
    assert model.one_face(astronaut)[0].descriptor is one.descriptor
    model.jitters = 3
    assert model.one_face(astronaut.copy())[0].descriptor is three.descriptor  # same pixels, same setting: cached


def test_the_worker_process_honours_the_setting(monkeypatch, astronaut):
    monkeypatch.setenv("TWINSIGHT_FACE_JITTERS", "3")
    worker = FaceModel(in_process=False)
    try:
        got = worker.one_face(astronaut)[0]
        assert got.jitters == 3
        assert np.array_equal(got.descriptor, FaceModel(in_process=True, jitters=3).one_face(astronaut)[0].descriptor)
        assert not np.array_equal(got.descriptor, worker.faces(astronaut)[0].descriptor)
    finally:
        worker.close()


def test_only_the_compared_face_is_jittered(astronaut, monkeypatch):
    model = FaceModel(in_process=True, jitters=3)
    calls = []
    monkeypatch.setattr(face_module, "jittered_chips", lambda chip, jitters: calls.append(jitters) or jittered_chips(chip, jitters))
    image = two_faces(astronaut)
    with pytest.raises(MultipleFacesError):
        model.one_face(image)
    assert calls == []  # refused before any jitter pass
    face, _ = model.one_face(image, on_multiple="largest")
    assert calls == [3] and face.jitters == 3 and face.area == max(f.area for f in model.faces(image))


@pytest.mark.skipif(not (FACES_DEV / "pairs.csv").is_file(), reason="dev faces (../shared/data/faces-dev) not present")
def test_the_default_keeps_a_margin_around_dlibs_threshold_on_the_dev_faces():
    model = FaceModel(in_process=True)
    with open(FACES_DEV / "pairs.csv", newline="") as handle:
        pairs = list(csv.DictReader(handle))
    descriptor = {name: model.one_face(FACES_DEV / name)[0].descriptor
                  for name in {row[key] for row in pairs for key in ("image_a", "image_b")}}
    same = [face_distance(descriptor[r["image_a"]], descriptor[r["image_b"]]) for r in pairs if r["same_person"] == "1"]
    different = [face_distance(descriptor[r["image_a"]], descriptor[r["image_b"]])
                 for r in pairs if r["same_person"] == "0"]
    assert max(same) < DLIB_THRESHOLD - 0.05 and min(different) > DLIB_THRESHOLD + 0.05



def test_large_photos_are_detected_on_a_small_copy_first_and_a_larger_one_when_it_finds_nothing(astronaut):
    model = FaceModel(in_process=True, jitters=1)
    sizes, real = [], model.detector.detector
    model.detector.detector = lambda pixels, upsample: sizes.append(max(pixels.shape[:2])) or real(pixels, upsample)
    head = astronaut.crop((140, 40, 310, 220))  # the astronaut's head with margin, 170 px wide
    reference = model.one_face(head)[0]
    big_face = Image.new("RGB", (2400, 1800), (128, 128, 128))
    big_face.paste(head.resize((680, 720)), (900, 500))
    sizes.clear()
    found = model.one_face(big_face)[0]
    assert sizes == [800] and face_distance(found.descriptor, reference.descriptor) < 0.2  # 227 px at 800: found
    small_face = Image.new("RGB", (2400, 1800), (128, 128, 128))
    small_face.paste(head, (1000, 800))  # 57 px at 800 px, too small there; 113 px at 1600
    sizes.clear()
    found = model.one_face(small_face)[0]
    assert sizes == [800, 1600] and face_distance(found.descriptor, reference.descriptor) < 0.2
