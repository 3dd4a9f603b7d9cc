"""Face mode's pool of dlib workers (TWINSIGHT_FACE_WORKERS / FaceModel(workers)): a pair's two images are described at
the same time in two worker processes, with the descriptors and errors one image after another gives; the same image
in flight twice is described once; the setting is validated; close() stops every worker; a dead one is restarted."""
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from indexer import face
from indexer.config import Settings
from indexer.errors import ConfigError, UserInputError
from indexer.face import FaceModel, FaceWorkerError, MultipleFacesError, NoFaceError, face_distance
from indexer.face_pool import Pool
from indexer.verify import Mode, Verifier
from test_face import two_faces
from test_face_worker import exited

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


@pytest.fixture(scope="module")
def pool_model():
    model = FaceModel(in_process=False, workers=2, jitters=2)
    yield model
    model.close()


def photo(name: str, trim: int = 0) -> Image.Image:
    """A shipped example photo; `trim` columns cut off the right give new pixels (no cache hit)."""
    image = Image.open(EXAMPLES / name).convert("RGB")
    return image.crop((0, 0, image.width - trim, image.height))


class Recorder:
    """A stand-in detector that takes `seconds` per image, finds no face, and records how many run at once."""

    def __init__(self, seconds: float = 0.3):
        self.seconds, self.lock, self.active, self.most, self.calls = seconds, threading.Lock(), 0, 0, 0

    def detect(self, pixels):
        with self.lock:
            self.active += 1
            self.calls += 1
            self.most = max(self.most, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        return []


def spy_on(model: FaceModel, monkeypatch) -> list[tuple[int, float, float]]:
    """Record (worker pid, start, end) of every detection the model's workers do."""
    calls = []
    for worker in model.detectors:
        def timed(pixels, worker=worker, real=worker.detect):
            start = time.monotonic()
            found = real(pixels)
            calls.append((worker.pid, start, time.monotonic()))
            return found
        monkeypatch.setattr(worker, "detect", timed)
    return calls


def test_a_pairs_two_images_are_described_at_once_by_two_worker_processes(pool_model, monkeypatch):
    calls = spy_on(pool_model, monkeypatch)
    result = Verifier(None, face_model=pool_model).compare(photo("face-a.jpg", 1), photo("face-b.jpg", 1), Mode.FACE)
    assert result.match and len(calls) == 2
    (pid_a, start_a, end_a), (pid_b, start_b, end_b) = calls
    assert pid_a != pid_b and {pid_a, pid_b} == {worker.pid for worker in pool_model.detectors}
    assert max(start_a, start_b) < min(end_a, end_b)  # each began before the other ended


def test_the_pool_gives_the_descriptors_of_one_image_after_another_in_this_process(pool_model):
    sequential = FaceModel(in_process=True, jitters=2)  # one detector: the images one after another
    images = [photo("face-a.jpg", 2), photo("face-b.jpg", 2)]
    pooled = Verifier(None, face_model=pool_model).represent_many(images, Mode.FACE)
    alone = [sequential.one_face(image)[0] for image in images]
    for got, expected in zip(pooled, alone):
        assert np.array_equal(got.vector, expected.descriptor)
        assert np.array_equal(np.asarray(got.crop), np.asarray(expected.chip))
    distance = Verifier(None, face_model=pool_model).compare(*images, Mode.FACE).distance
    assert distance == face_distance(alone[0].descriptor, alone[1].descriptor)


def test_one_faces_runs_as_many_images_at_once_as_there_are_detectors():
    two = Recorder()
    FaceModel(detectors=[two, two]).one_faces([np.zeros((20, 20, 3), np.uint8), np.ones((20, 20, 3), np.uint8)])
    assert two.calls == 2 and two.most == 2
    one = Recorder(0.05)
    FaceModel(detectors=[one]).one_faces([np.zeros((20, 20, 3), np.uint8), np.ones((20, 20, 3), np.uint8)])
    assert one.calls == 2 and one.most == 1  # a single detector is never lent twice


def test_errors_name_their_image_when_the_images_are_described_at_once(pool_model):
    verifier = Verifier(None, face_model=pool_model)
    with pytest.raises(NoFaceError, match="No face found in image B"):
        verifier.compare(photo("face-a.jpg", 3), photo("coffee.jpg"), Mode.FACE)
    with pytest.raises(NoFaceError, match="No face found in image A"):  # both fail: the first image's error, as before
        verifier.compare(photo("coffee.jpg"), photo("coffee.jpg", 1), Mode.FACE)
    with pytest.raises(MultipleFacesError, match="2 faces found in image B"):
        verifier.compare(photo("face-a.jpg", 3), two_faces(Image.fromarray(data.astronaut())), Mode.FACE)
    with pytest.raises(NoFaceError, match="No face found in reference 2"):
        verifier.enrol_and_compare([photo("face-a.jpg", 3), photo("coffee.jpg")], photo("face-b.jpg", 3), Mode.FACE)
    found = pool_model.one_faces([photo("coffee.jpg"), photo("face-b.jpg", 3)], names=["first", "second"])
    assert isinstance(found[0], NoFaceError) and "in first" in str(found[0]) and found[1][0].jitters == 2


def test_a_service_error_is_raised_earliest_image_first():
    class Failing:
        def detect(self, pixels):
            if pixels.shape[0] in (21, 22):
                raise FaceWorkerError(f"worker failed on the image of {pixels.shape[0]} rows")
            return []

    model = FaceModel(detectors=[Failing(), Failing()])
    no_face, fails, fails_too = (np.zeros((rows, 20, 3), np.uint8) for rows in (20, 21, 22))
    with pytest.raises(FaceWorkerError, match="21 rows"):  # not a UserInputError: raised, not returned
        model.one_faces([no_face, fails])
    with pytest.raises(FaceWorkerError, match="22 rows"):  # the earlier of two, as one after another would
        model.one_faces([fails_too, fails])


def test_each_detector_serves_one_request_at_a_time():
    first, second = Recorder(0.1), Recorder(0.1)
    model = FaceModel(detectors=[first, second])
    threads = [threading.Thread(target=model.faces, args=(np.full((20, 20, 3), k, np.uint8),)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert first.calls + second.calls == 6 and first.most == second.most == 1


def test_the_same_image_in_flight_twice_is_described_once():
    recorder = Recorder()
    model = FaceModel(detectors=[recorder, recorder])
    image = np.full((20, 20, 3), 7, np.uint8)
    found = model.one_faces([image, image.copy()])
    assert recorder.calls == 1 and all(isinstance(f, NoFaceError) for f in found)


def test_when_the_first_request_for_an_image_fails_the_one_waiting_for_it_tries_itself():
    class FailsOnce:
        calls = 0

        def detect(self, pixels):
            FailsOnce.calls += 1
            time.sleep(0.2)  # long enough for the second request to wait on this one
            if FailsOnce.calls == 1:
                raise FaceWorkerError("the first try failed")
            return []

    model = FaceModel(detectors=[FailsOnce(), FailsOnce()])
    image, outcomes = np.zeros((20, 20, 3), np.uint8), []

    def ask():
        try:
            outcomes.append(model.faces(image))
        except FaceWorkerError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert FailsOnce.calls == 2 and sorted(type(o).__name__ for o in outcomes) == ["FaceWorkerError", "list"]


@pytest.mark.parametrize("text", ["0", "17", "two", "1.5"])
def test_a_bad_workers_variable_is_refused_naming_it_and_the_fix(monkeypatch, text):
    with pytest.raises(ConfigError, match=rf"TWINSIGHT_FACE_WORKERS='{text}' is not valid: set it to a whole number "
                                          r"from 1 to 16, or unset it for the default \(2, or 1 on a 1-core CPU\)"):
        Settings.from_environ({"TWINSIGHT_FACE_WORKERS": text})
    monkeypatch.setenv("TWINSIGHT_FACE_WORKERS", text)
    with pytest.raises(ConfigError, match="TWINSIGHT_FACE_WORKERS"):
        FaceModel(in_process=True)  # the first read of any setting reports it


@pytest.mark.parametrize("bad", [0, -1, 17, 2.5, "2", True])
def test_a_bad_workers_parameter_is_refused_with_the_fix(bad):
    with pytest.raises(UserInputError, match=rf"workers={bad!r} is not valid: set it to a whole number from 1 to 16"):
        FaceModel(in_process=False, workers=bad)


def test_workers_come_from_the_setting_else_one_per_core_up_to_two_and_in_process_keeps_one(monkeypatch):
    class Fake:
        closed = 0

        def close(self):
            Fake.closed += 1

    monkeypatch.setattr(face, "FaceWorker", Fake)  # no processes: only the pool's size is under test
    monkeypatch.delenv("TWINSIGHT_FACE_WORKERS", raising=False)
    for cores, expected in ((1, 1), (2, 2), (8, 2), (None, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert len(FaceModel(in_process=False).detectors) == expected
    monkeypatch.setenv("TWINSIGHT_FACE_WORKERS", "3")
    assert len(FaceModel(in_process=False).detectors) == 3
    assert len(FaceModel(in_process=False, workers=1).detectors) == 1  # the parameter overrides the variable
    model = FaceModel(in_process=False)
    model.close()
    assert Fake.closed == 3
    monkeypatch.setenv("TWINSIGHT_FACE_WORKER", "0")
    in_process = FaceModel()
    assert len(in_process.detectors) == 1 and not isinstance(in_process.detector, Fake)  # dlib here: one detector
    with pytest.raises(UserInputError, match="workers=2 needs worker processes"):
        FaceModel(in_process=True, workers=2)


def test_a_pool_that_cannot_start_closes_the_workers_it_started():
    made, closed = [], []

    def make():
        made.append(len(made))
        if made[-1] == 1:
            raise FileNotFoundError("dlib face models are missing")
        return made[-1]

    with pytest.raises(FileNotFoundError, match="models are missing"):
        Pool.start(make, 3, closed.append)
    assert sorted(made) == [0, 1, 2] and sorted(closed) == [0, 2]


def test_close_stops_every_worker():
    model = FaceModel(in_process=False, workers=2)
    pids = [worker.pid for worker in model.detectors]
    assert len(set(pids)) == 2 and not any(exited(pid) for pid in pids)
    model.close()
    assert [worker.pid for worker in model.detectors] == [None, None] and all(exited(pid) for pid in pids)


def test_a_worker_killed_between_pairs_is_restarted_and_the_next_pair_is_answered(pool_model):
    reference = pool_model.one_face(photo("face-a.jpg", 4))[0]
    dead, alive = pool_model.detectors
    dead_pid, alive_pid, restarts = dead.pid, alive.pid, dead.restarts
    os.kill(dead_pid, 9)
    result = Verifier(None, face_model=pool_model).compare(photo("face-a.jpg", 5), photo("face-b.jpg", 5), Mode.FACE)
    # An idle pool lends both workers to a pair (in turn), so the killed one was needed and restarted.
    assert result.match and dead.restarts == restarts + 1 and dead.pid not in (None, dead_pid) and not exited(dead.pid)
    assert alive.pid == alive_pid and alive.restarts == 0
    assert face_distance(Verifier(None, face_model=pool_model).represent(photo("face-a.jpg", 5), Mode.FACE).vector,
                         reference.descriptor) < 0.1
