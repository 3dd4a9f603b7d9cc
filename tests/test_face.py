"""Face mode on real faces: scikit-image's astronaut photo, pasted two-face and no-face images, dev faces."""
import pytest
from PIL import Image
from skimage import data

from indexer.face import DLIB_THRESHOLD, MultipleFacesError, NoFaceError, face_distance, load_face_model
from conftest import SHARED_DATA
from face_fixture import write_face_pairs

FACES_DEV = SHARED_DATA / "faces-dev"


@pytest.fixture(scope="module")
def model():
    return load_face_model()


@pytest.fixture(scope="module")
def astronaut():
    return Image.fromarray(data.astronaut())


def two_faces(astronaut):
    face = astronaut.crop((140, 40, 310, 220))  # the astronaut's head with margin
    canvas = Image.new("RGB", (420, 220), (128, 128, 128))
    canvas.paste(face, (20, 20))
    canvas.paste(face.resize((150, 159)), (250, 30))
    return canvas


def test_astronaut_face_is_found_aligned_and_embedded(model, astronaut):
    faces = model.faces(astronaut)
    assert len(faces) == 1
    face = faces[0]
    left, top, right, bottom = face.box
    assert 150 < (left + right) / 2 < 300 and 50 < (top + bottom) / 2 < 200  # the head, top middle
    assert face.chip.size == (150, 150) and face.descriptor.shape == (128,)
    assert face.upsample == 0  # found at native size: no upsampling spent


def test_same_face_matches_across_scale_and_crop(model, astronaut):
    a = model.one_face(astronaut)[0]
    b, _ = model.one_face(astronaut.crop((60, 0, 460, 400)).resize((320, 320)))
    assert face_distance(a.descriptor, b.descriptor) < DLIB_THRESHOLD


def test_small_faces_get_upsampling_only_when_needed(model, astronaut):
    small, note = model.one_face(astronaut.resize((300, 300)))
    assert small.upsample == 1 and "upsampling" in note  # missed at native size, found after one 2x upsampling
    assert face_distance(small.descriptor, model.one_face(astronaut)[0].descriptor) < DLIB_THRESHOLD


def test_no_face_and_blank_images_raise_a_clear_error(model):
    for image in (Image.fromarray(data.coffee()), Image.new("RGB", (300, 300), "white")):
        with pytest.raises(NoFaceError, match="No face found") as info:
            model.one_face(image)
        assert isinstance(info.value, ValueError) and "general mode" in str(info.value)


def test_two_faces_raise_with_crops_or_pick_the_largest(model, astronaut):
    image = two_faces(astronaut)
    with pytest.raises(MultipleFacesError, match="2 faces") as info:
        model.one_face(image, name="image A")
    assert len(info.value.crops) == 2 and all(c.size == (150, 150) for c in info.value.crops)
    face, note = model.one_face(image, on_multiple="largest", name="image A")
    assert "compared the largest" in note
    assert face.area == max(f.area for f in model.faces(image))
    reference = model.one_face(astronaut)[0]
    assert face_distance(face.descriptor, reference.descriptor) < DLIB_THRESHOLD


def test_detections_are_cached_per_image_content(model, astronaut):
    first = model.faces(astronaut)
    assert model.faces(astronaut.copy()) is first  # same pixels: no second detection or CNN pass
    assert model.faces(astronaut.rotate(3)) is not first


def test_shipped_face_pairs_at_the_documented_threshold(tmp_path):
    """The accuracy check that runs in every clone: pairs made from faces that ship with scikit-image
    (tests/fixtures/faces), through the same evaluation as the dev faces below."""
    from indexer.siamese.evaluate import eval_pairs
    from indexer.verify import Mode, Verifier

    pairs = write_face_pairs(tmp_path / "faces")
    result = eval_pairs(Verifier(embedder=None), Mode.FACE, pairs, pairs.parent)
    assert result["pairs_skipped"] == 0 and result["pairs_scored"] == 56
    assert (result["same_pairs"], result["different_pairs"]) == (26, 30)
    assert result["threshold"] == DLIB_THRESHOLD and "dlib" in result["threshold_source"]
    assert result["accuracy"] >= 0.9 and result["roc_auc"] >= 0.95


@pytest.mark.shared_data("faces-dev", "pairs.csv")
def test_dev_faces_pairs_at_the_documented_threshold():
    from indexer.siamese.evaluate import eval_pairs
    from indexer.verify import Mode, Verifier

    verifier = Verifier(embedder=None)  # face mode never touches the backbone
    result = eval_pairs(verifier, Mode.FACE, FACES_DEV / "pairs.csv", FACES_DEV)
    assert result["pairs_skipped"] == 0 and result["pairs_scored"] == 55
    assert result["threshold"] == DLIB_THRESHOLD and "dlib" in result["threshold_source"]
    assert result["accuracy"] >= 0.9 and result["roc_auc"] >= 0.95
