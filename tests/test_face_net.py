"""indexer.face_net: dlib's face ResNet run in torch gives dlib's own descriptors, reads only the model it knows, and
adds a halving block's shortcut the way dlib does."""
import dlib
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from indexer.face import FaceModel
from indexer.face_net import MODEL_FILE, FaceDescriber, FaceModelFileError, _add, face_describer, read_weights
from indexer.face_worker import jittered_chips, models_dir
from test_face_pool import photo


@pytest.fixture(scope="module")
def chips():
    model = FaceModel(in_process=True, jitters=1)
    faces = [model.faces(image)[0] for image in (Image.fromarray(data.astronaut()), photo("face-a.jpg"),
                                                  photo("face-b.jpg"))]
    chip = np.asarray(faces[0].chip)
    noise = np.random.default_rng(0).integers(0, 256, chip.shape, dtype=np.uint8)  # far from any face
    return np.stack([np.asarray(face.chip) for face in faces] + jittered_chips(chip, 4)[1:] + [noise])


def test_the_descriptors_are_dlibs_own(chips):
    dlib_net = dlib.face_recognition_model_v1(str(models_dir() / MODEL_FILE))
    expected = np.asarray(dlib_net.compute_face_descriptor(list(chips)), np.float32)
    got = face_describer()(chips)
    assert got.shape == (len(chips), 128) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.linalg.norm(expected[0] - expected[-1]) > 0.5  # a face and noise differ: the match is no constant
    np.testing.assert_array_equal(face_describer()(list(chips[:2])), got[:2])  # a list or an array, batched or not


def test_chips_of_another_shape_are_refused_and_no_chips_give_no_descriptors():
    assert face_describer()([]).shape == (0, 128)
    with pytest.raises(ValueError, match=r"\(n, 150, 150, 3\)"):
        face_describer()(np.zeros((1, 100, 100, 3), np.uint8))


def test_a_file_that_is_not_dlibs_face_resnet_is_refused_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install face-recognition-models"):
        FaceDescriber(tmp_path / "missing.dat")
    other = tmp_path / "other.dat"
    other.write_bytes(b"\x00" * 64)
    with pytest.raises(FaceModelFileError, match="not dlib's face ResNet.*force-reinstall"):
        read_weights(other)
    cut = tmp_path / "cut.dat"
    cut.write_bytes((models_dir() / MODEL_FILE).read_bytes()[:5_000_000])  # a download that stopped early
    with pytest.raises(FaceModelFileError, match="damaged or incomplete|convolutions"):
        read_weights(cut)


def test_the_weights_are_the_29_convolutions_of_the_known_network():
    weights = read_weights(models_dir() / MODEL_FILE)
    shapes = [w.shape for w, *_ in weights["convs"]]
    assert shapes[0] == (32, 3, 7, 7) and shapes[-1] == (256, 256, 3, 3) and len(shapes) == 29
    assert [s for _, _, s, _ in weights["convs"]].count((2, 2)) == 5  # the stem and four halving blocks
    assert weights["linear"].shape == (256, 128)
    np.testing.assert_allclose(weights["mean"], [122.782, 117.001, 104.298], atol=1e-3)  # dlib's RGB means


def test_a_shortcut_with_fewer_channels_and_more_pixels_is_added_as_dlib_does():
    convolved = torch.ones(1, 4, 2, 2)
    shortcut = torch.full((1, 2, 3, 3), 10.0)
    out = _add(convolved, shortcut)
    assert out.shape == (1, 4, 3, 3)
    assert torch.all(out[0, :2, :2, :2] == 11) and torch.all(out[0, 2:, :2, :2] == 1)  # the sum where both are
    assert torch.all(out[0, :2, 2, :] == 10) and torch.all(out[0, 2:, 2, :] == 0)  # zero beyond a tensor's end


def test_overlapping_calls_leave_later_threads_the_process_thread_count(chips, monkeypatch):
    """torch.set_num_threads also sets the count threads started later begin with. A call that starts while another
    is inside its one-thread pass must not read that 1 as the count to put back."""
    import threading

    from indexer import face_net

    monkeypatch.setattr(face_net, "TORCH_THREADS", 2)
    describer, inside, release = FaceDescriber(), threading.Event(), threading.Event()
    net = describer.net

    def held(batch):  # the first call waits inside its pass until the second has run
        if not inside.is_set():
            inside.set()
            release.wait(30)
        return net(batch)

    describer.net = held
    main_threads = torch.get_num_threads()
    torch.set_num_threads(2)  # this thread's count, and the one new threads start with
    try:
        first = threading.Thread(target=describer, args=(chips[:1],))
        first.start()
        assert inside.wait(30)
        second = threading.Thread(target=describer, args=(chips[:1],))  # started while the first holds 1
        second.start()
        second.join(30)
        release.set()
        first.join(30)
        seen = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert seen == [2]
    finally:
        release.set()
        torch.set_num_threads(main_threads)


def test_a_descriptor_model_that_cannot_load_starts_no_worker_process(monkeypatch):
    from indexer import face

    started = []
    monkeypatch.setattr(face, "FaceWorker", lambda *args, **kwargs: started.append(1))

    def damaged():
        raise FaceModelFileError("the model file is damaged")

    monkeypatch.setattr(face, "face_describer", damaged)
    with pytest.raises(FaceModelFileError, match="damaged"):
        FaceModel(in_process=False, workers=2)
    assert started == []  # nothing left running for the failed model
