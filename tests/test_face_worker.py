"""dlib in its worker process: same results as in this process, torch never loaded there, dlib never loaded here,
restarted when it dies, and clear errors when it cannot start or fails on an image."""
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from indexer import face_worker
from indexer.face import FaceModel, FaceWorker, FaceWorkerError
from test_face import two_faces

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def worker_model():
    model = FaceModel(in_process=False, workers=1)  # one worker: these tests follow what it does (see test_face_pool)
    yield model
    model.close()


def stand_in(tmp_path, body: str) -> Path:
    """A worker script that borrows the real protocol helpers and then misbehaves as `body` says."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, runpy, sys
        real = runpy.run_path({face_worker.__file__!r})  # the helpers only: run_name is not __main__
        replies = os.fdopen(1, "wb")
    """) + textwrap.dedent(body))
    return script


def exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True


def test_worker_gives_the_same_faces_as_dlib_in_this_process(worker_model, monkeypatch):
    monkeypatch.setenv("TWINSIGHT_FACE_WORKER", "0")
    in_process = FaceModel()
    for image in (Image.fromarray(data.astronaut()), two_faces(Image.fromarray(data.astronaut())),
                  Image.fromarray(data.astronaut()).resize((300, 300))):  # the last needs upsampling
        expected, got = in_process.faces(image), worker_model.faces(image)
        assert len(got) == len(expected) >= 1
        for a, b in zip(got, expected):
            assert a.box == b.box and a.upsample == b.upsample
            assert a.descriptor.dtype == np.float32 and np.array_equal(a.descriptor, b.descriptor)
            assert np.array_equal(np.asarray(a.chip), np.asarray(b.chip))
    assert isinstance(worker_model.detector, FaceWorker) and not isinstance(in_process.detector, FaceWorker)


def test_dlib_runs_only_in_the_worker_and_the_worker_never_loads_torch(tmp_path):
    # A fresh interpreter: this test process has imported dlib already (the in-process tests).
    probe = textwrap.dedent("""
        import sys
        from skimage import data
        from indexer.face import FaceModel
        model = FaceModel()
        assert len(model.faces(data.astronaut())) == 1
        assert model.one_face(data.astronaut())[0].jitters == 2  # the default passes, described in this process
        maps = open(f"/proc/{model.detector.pid}/maps").read()
        print("dlib here:", "dlib" in sys.modules, "| torch here:", "torch" in sys.modules)
        print("worker maps dlib:", "dlib" in maps, "| worker maps torch:", "libtorch" in maps)
    """)
    env = {key: value for key, value in os.environ.items() if key != "TWINSIGHT_FACE_WORKER"}  # the default
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # dlib stays out of this process (torch may or may not be loaded here: indexer's imports are lazy); the worker
    # maps dlib and not torch.
    assert "dlib here: False |" in out.stdout
    assert "worker maps dlib: True | worker maps torch: False" in out.stdout


def test_a_killed_worker_is_restarted_and_answers(worker_model):
    worker = worker_model.detector
    pid, restarts = worker.pid, worker.restarts
    reference = worker_model.faces(data.astronaut())[0]
    os.kill(pid, 9)
    fresh_pixels = data.astronaut()[:, :-3]  # not in the cache: goes to the worker
    face = worker_model.faces(fresh_pixels)[0]
    assert worker.pid != pid and worker.restarts == restarts + 1 and not exited(worker.pid)
    assert np.linalg.norm(face.descriptor - reference.descriptor) < 0.1


def test_a_failure_on_one_image_is_reported_and_the_worker_keeps_running(worker_model):
    worker = worker_model.detector
    pid = worker.pid
    with pytest.raises(FaceWorkerError, match="failed on this image .*Try another photo"):
        worker.detect(np.zeros((40, 40, 4), np.uint8))  # dlib takes RGB or grey pixels, not RGBA
    assert worker.pid == pid and len(worker.detect(data.astronaut()[:, :-5])) == 1


def test_a_worker_that_dies_on_an_image_twice_gives_an_error_and_restarts_next_time(tmp_path):
    script = stand_in(tmp_path, """
        real["send"](replies, {"kind": "ready", "pid": os.getpid()})
        if real["receive"](sys.stdin.buffer)[1][0].shape[0] == 13:  # the poisoned image
            os._exit(3)
        real["send"](replies, {"kind": "faces", "faces": []})
    """)
    worker = FaceWorker(script)
    try:
        with pytest.raises(FaceWorkerError, match=r"stopped twice on this image \(exit code 3\)"):
            worker.detect(np.zeros((13, 13, 3), np.uint8))
        assert worker.restarts == 1  # once while retrying; the second death leaves no worker
        assert worker.detect(np.zeros((20, 20, 3), np.uint8)) == []
        assert worker.restarts == 2
    finally:
        worker.close()


def test_a_worker_that_cannot_start_says_why(tmp_path):
    missing = stand_in(tmp_path, """
        real["send"](replies, {"kind": "error", "type": "FileNotFoundError", "message": "dlib face models are missing"})
    """)
    with pytest.raises(FileNotFoundError, match="dlib face models are missing.*pip install dlib-bin"):
        FaceWorker(missing)
    crashing = stand_in(tmp_path, "os._exit(7)\n")
    with pytest.raises(FaceWorkerError, match="exited with code 7 while starting.*TWINSIGHT_FACE_WORKER=0"):
        FaceWorker(crashing)


def test_the_worker_never_outlives_the_app():
    probe = "import os; from indexer.face import FaceWorker; print(FaceWorker().pid, flush=True); os._exit(0)"
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    pid = int(out.stdout.split()[0])  # the app exited without closing it (no atexit): its stdin closed anyway
    deadline = time.monotonic() + 30
    while not exited(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert exited(pid)


def test_close_stops_the_worker(tmp_path):
    worker = FaceWorker()
    pid = worker.pid
    worker.close()
    assert worker.pid is None and exited(pid)


def test_the_shared_face_model_is_made_once_when_threads_ask_together(monkeypatch):
    import threading

    from indexer import face

    made = []

    def slow_model():
        time.sleep(0.3)  # a worker's start: long enough for every thread to ask meanwhile
        made.append(object())
        return made[-1]

    monkeypatch.setattr(face, "FaceModel", slow_model)
    face._shared_face_model.cache_clear()
    got = []
    try:
        threads = [threading.Thread(target=lambda: got.append(face.load_face_model())) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        face._shared_face_model.cache_clear()  # the next user gets a real model again
    assert len(made) == 1 and got == made * 4


def test_an_image_that_takes_too_long_stops_the_worker_and_the_next_image_is_answered(tmp_path):
    script = stand_in(tmp_path, """
        import time
        real["send"](replies, {"kind": "ready", "pid": os.getpid()})
        while True:
            if real["receive"](sys.stdin.buffer)[1][0].shape[0] == 13:  # the pathological image
                time.sleep(3600)
            real["send"](replies, {"kind": "faces", "faces": []})
    """)
    worker = FaceWorker(script, timeout=1)
    try:
        first = worker.pid
        start = time.monotonic()
        with pytest.raises(FaceWorkerError, match=r"took over 1 s on this image and was stopped"):
            worker.detect(np.zeros((13, 13, 3), np.uint8))
        assert time.monotonic() - start < 10 and exited(first)  # not retried: no second wait
        assert worker.detect(np.zeros((20, 20, 3), np.uint8)) == [] and worker.pid != first
    finally:
        worker.close()


def test_a_worker_that_hangs_while_starting_is_stopped_with_a_clear_error(tmp_path, monkeypatch):
    from indexer import face

    monkeypatch.setattr(face, "STARTUP_TIMEOUT", 1.0)
    script = stand_in(tmp_path, "import time\ntime.sleep(3600)\n")
    with pytest.raises(FaceWorkerError, match="did not start in time"):
        FaceWorker(script, timeout=1)


def test_a_cached_image_is_answered_while_another_image_is_being_detected(worker_model):
    import threading

    real, started, release = worker_model.detector, threading.Event(), threading.Event()

    class SlowDetector:
        def detect(self, pixels):
            if pixels.shape[1] != data.astronaut().shape[1]:  # the other image waits until released
                started.set()
                release.wait(30)
            return real.detect(pixels)

    model = FaceModel(detectors=[SlowDetector()])  # one detector, busy with the other image
    cached = model.faces(data.astronaut())
    try:
        other = threading.Thread(target=model.faces, args=(data.astronaut()[:, :-7],))
        other.start()
        assert started.wait(10)
        start = time.monotonic()
        assert model.faces(data.astronaut()) is cached  # while the other image is still in dlib
        assert time.monotonic() - start < 5 and not release.is_set()
        release.set()
        other.join()
    finally:
        release.set()


def test_restarts_leave_no_open_pipes_behind(tmp_path):
    script = stand_in(tmp_path, """
        real["send"](replies, {"kind": "ready", "pid": os.getpid()})
        real["receive"](sys.stdin.buffer)
        os._exit(3)  # every image kills it
    """)
    worker = FaceWorker(script)
    try:
        with pytest.raises(FaceWorkerError):
            worker.detect(np.zeros((8, 8, 3), np.uint8))
        open_fds = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            with pytest.raises(FaceWorkerError, match="stopped twice"):
                worker.detect(np.zeros((8, 8, 3), np.uint8))
        assert len(os.listdir("/proc/self/fd")) <= open_fds  # 10 more dead workers, no more descriptors
    finally:
        worker.close()
