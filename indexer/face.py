"""Face pipeline: dlib detection, 5-point alignment, and dlib's ResNet 128-d face descriptor.

The model files ship in the PyPI package `face-recognition-models`. dlib detects and aligns in worker processes
(indexer.face_worker): its bindings keep the GIL while they work, which would stall the app's other requests. There
is one worker per core (up to 2, TWINSIGHT_FACE_WORKERS), so the two images of a pair are detected at once. The
descriptor network runs here, in torch (indexer.face_net: dlib's weights, the same descriptors, ~8x faster than
dlib-bin's own CNN).
dlib's published operating point: two descriptors closer than 0.6 (Euclidean) are the same person
(99.38% on LFW).
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import hashlib
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from . import face_worker
from .face_net import face_describer
from .face_worker import FaceDetector, RawFace, jittered_chips
from .face_pool import Pool, SingleFlight
from .config import Settings, settings
from .images import ImageSource, load_image
from .lru import LruCache
from .errors import ServiceError, UserInputError

DLIB_THRESHOLD = 0.6  # dlib's documented same-person distance for dlib_face_recognition_resnet_model_v1
CACHE_SIZE = 64
# CNN passes per compared face (TWINSIGHT_FACE_JITTERS): 1 is the aligned chip alone; 2 averages it with its mirror
# image; more add dlib-style jitters from a fixed seed (indexer.face_worker.jittered_chips). Each pass costs one
# chip's CNN time (12-16 ms here, Intel Xeon, 1 thread), and only the face being compared pays it.
DEFAULT_JITTERS = Settings.face_jitters
MAX_JITTERS = 32
MAX_WORKERS = 16  # each worker process holds its own copy of dlib's detector and landmarks
STARTUP_TIMEOUT = 120.0  # seconds for the worker to import dlib and load its models (~0.6 s here)


class FaceError(UserInputError):
    """Face mode could not compare an image. The message names the problem and the fix."""

    def __init__(self, message: str, crops: list[Image.Image] | None = None):
        super().__init__(message)
        self.crops = crops or []


class NoFaceError(FaceError):
    """No face was detected."""


class MultipleFacesError(FaceError):
    """Several faces were detected and the caller asked not to guess which one is meant; `crops` holds them."""


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom in the original image
    descriptor: np.ndarray = field(repr=False)  # (128,) float32
    chip: Image.Image = field(repr=False)  # the aligned 150x150 crop the descriptor was computed from
    upsample: int = 0  # how many 2x upsamplings the detector needed
    jitters: int = 1  # CNN passes averaged into `descriptor` (see DEFAULT_JITTERS)

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(0, right - left) * max(0, bottom - top)


class FaceWorkerError(ServiceError):
    """The face worker process could not load its models, failed on an image, or stopped: our side, not the
    image's fault (the app shows it as an internal error with a reference)."""


class FaceWorker:
    """`FaceDetector` in a child process (indexer/face_worker.py): started here, restarted when it has died.

    The app only waits on a pipe while dlib works, so its other threads keep the GIL. Costs: ~0.6-0.9 s to start,
    ~55 MB (resident) for dlib's detector and landmarks, and a copy of the pixels per image. Thread-safe; one image at
    a time.
    An image that takes longer than `timeout` seconds (TWINSIGHT_FACE_TIMEOUT, 60; a 14-megapixel photo takes
    ~0.3 s) has its worker killed and gets a FaceWorkerError, so one pathological upload cannot hold face mode.
    """

    def __init__(self, script: str | os.PathLike = face_worker.__file__, timeout: float | None = None):
        self.script = str(script)  # the worker's code; tests pass stand-ins that fail in set ways
        self.timeout = float(timeout if timeout is not None else settings().face_timeout)
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.restarts = 0
        with self._lock:
            self._start()
        atexit.register(self.close)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        # -P keeps indexer/ off the child's sys.path, so no module here can shadow an import of dlib, numpy or PIL.
        command = [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), self.script]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            with _deadline(process, max(self.timeout, STARTUP_TIMEOUT)) as late:
                reply, _ = face_worker.receive(process.stdout)
        except EOFError:
            why = "did not start in time" if late.is_set() else f"exited with code {process.wait()} while starting"
            reply = {"kind": "error", "type": "exit", "message": f"it {why} (see the log above)"}
        if reply["kind"] != "ready":
            self._stop(process)
            error = {"FileNotFoundError": FileNotFoundError, "ModuleNotFoundError": ImportError,
                     "ImportError": ImportError}.get(reply["type"], FaceWorkerError)
            fix = ("Face mode needs pip install dlib-bin face-recognition-models (both in requirements.txt)."
                   if error is not FaceWorkerError else
                   "Set TWINSIGHT_FACE_WORKER=0 to run dlib in the app's process instead.")
            raise error(f"The face model could not load in its worker process: {reply['message']}. {fix}")
        self._process = process

    def detect(self, pixels: np.ndarray) -> list[RawFace]:
        """`FaceDetector.detect` in the worker. If the worker dies on the image, it is restarted and the image tried
        once more; a second death raises FaceWorkerError (the worker restarts on the next call)."""
        reply, chips = self._request({"kind": "faces"}, pixels)
        return [RawFace(tuple(face["box"]), chip, face["upsample"]) for face, chip in zip(reply["faces"], chips)]

    def _request(self, header: dict, pixels: np.ndarray) -> tuple[dict, list[np.ndarray]]:
        with self._lock:
            for attempt in range(2):
                if self._process is None or self._process.poll() is not None:  # stopped since the last image
                    self._restart()
                try:
                    with _deadline(self._process, self.timeout) as late:
                        face_worker.send(self._process.stdin, header, (pixels,))
                        reply, arrays = face_worker.receive(self._process.stdout)
                except (EOFError, OSError):
                    code = self._stop(self._process)  # also closes its pipes
                    self._process = None
                    if late.is_set():  # not retried: the image would take as long again
                        raise FaceWorkerError(
                            f"The face model took over {self.timeout:g} s on this image and was stopped. Try a smaller "
                            "photo, or general mode to compare whole images.") from None
                    if attempt:
                        raise FaceWorkerError(
                            f"The face model's worker process stopped twice on this image (exit code {code}). "
                            "Try another photo, or a smaller one; face mode restarts on the next request.") from None
                    continue
                if reply["kind"] == header["kind"]:
                    return reply, arrays
                raise FaceWorkerError(f"The face model failed on this image ({reply['type']}: {reply['message']}). "
                                      "Try another photo, or general mode to compare whole images.")

    def _restart(self) -> None:
        if self._process is not None:
            self._stop(self._process)
        self._process = None
        self.restarts += 1
        self._start()

    def close(self) -> None:
        """Stop the worker (it exits when its stdin closes). Called at exit; a later call starts a new one."""
        with self._lock:
            if self._process is not None:
                self._stop(self._process)
                self._process = None

    @staticmethod
    def _stop(process: subprocess.Popen) -> int:
        """Close the worker's stdin (it exits on that), kill it if it has not within 5 s; its exit code."""
        try:
            process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        process.stdout.close()
        return process.returncode


@contextlib.contextmanager
def _deadline(process: subprocess.Popen, seconds: float):
    """Kill `process` if the block takes longer than `seconds`; yields an Event set when that happened (the block's
    pipe read then ends with EOFError)."""
    late = threading.Event()

    def kill() -> None:
        late.set()
        process.kill()

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()
    try:
        yield late
    finally:
        timer.cancel()


class FaceModel:
    """Face detection and description, loaded once; per-image results are cached by content hash.

    dlib's detector runs in `workers` worker processes (FaceWorker; default TWINSIGHT_FACE_WORKERS, else one per core up
    to 2), each detecting and aligning one image at a time; the chips are described here (indexer.face_net), on the
    asking thread: `one_faces` does a pair's two images at once. TWINSIGHT_FACE_WORKER=0,
    or in_process=True, runs one detector in this process instead (where starting processes is not allowed; dlib
    then holds the GIL while it works, so a second in-process detector would not run at the same time).
    `jitters` (default TWINSIGHT_FACE_JITTERS, else DEFAULT_JITTERS) is how many CNN passes `one_face` averages into
    the compared face's descriptor; `faces` gives every face's single-pass descriptor. `detectors` replaces the
    detectors with ready-made ones (tests pass stand-ins).
    """

    def __init__(self, cache_size: int = CACHE_SIZE, in_process: bool | None = None, jitters: int | None = None,
                 workers: int | None = None, detectors: Sequence[FaceDetector | FaceWorker] | None = None):
        self.jitters = check_jitters(jitters) if jitters is not None else settings().face_jitters
        if workers is not None:
            workers = check_workers(workers)
        # The ResNet, shared by every FaceModel of the process; loaded before any worker starts, so a damaged model
        # file leaves no worker processes behind.
        self._describe = face_describer()
        if detectors is None:
            if in_process is None:
                in_process = not settings().face_worker
            if in_process and workers not in (None, 1):
                raise UserInputError(f"workers={workers} needs worker processes, and dlib runs in this process here "
                                     "(in_process=True or TWINSIGHT_FACE_WORKER=0), one image at a time. Pass "
                                     "in_process=False (or unset TWINSIGHT_FACE_WORKER), or leave workers unset.")
            self._pool = (Pool([FaceDetector()]) if in_process else
                          Pool.start(FaceWorker, workers or default_workers(), FaceWorker.close))
        else:
            self._pool = Pool(detectors)
        self._single = SingleFlight()  # the same image in flight twice takes one worker, once
        self._cache: LruCache[str, list[Face]] = LruCache(cache_size)  # its own lock: cached answers never wait
        self._jittered: LruCache[str, np.ndarray] = LruCache(cache_size)  # by chip hash and jitters

    @property
    def detectors(self) -> tuple[FaceDetector | FaceWorker, ...]:
        """Every detector: the worker processes, or the one in this process."""
        return self._pool.members

    @property
    def detector(self) -> FaceDetector | FaceWorker:
        """The first detector (in this process, the only one); benchmarks and tests reach dlib through it."""
        return self._pool.members[0]

    @property
    def name(self) -> str:
        """What produced a result, with the jitter setting (it moves distances near the threshold)."""
        passes = f"{self.jitters} CNN pass" + ("es" if self.jitters > 1 else "")
        return f"dlib-resnet-v1 (HOG detector, 5-point alignment, {passes})"

    def faces(self, source: ImageSource) -> list[Face]:
        """Every face in the image, largest first. Cached: the same image is detected and embedded once."""
        image = load_image(source)
        pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        key = hashlib.blake2b(memoryview(pixels), digest_size=16).hexdigest() + f"{pixels.shape}"

        def detect() -> list[Face]:
            with self._pool.checkout() as detector:
                raw_faces = detector.detect(pixels)
            # After the worker is free again: another image can be detected while these chips are described.
            descriptors = self._describe([raw.chip for raw in raw_faces])
            return sorted((Face(raw.box, descriptor, Image.fromarray(raw.chip), raw.upsample)
                           for raw, descriptor in zip(raw_faces, descriptors)), key=lambda face: face.area, reverse=True)

        return self._single.get(self._cache, key, detect)

    def describe(self, face: Face) -> Face:
        """`face` with its descriptor averaged over the model's `jitters` CNN passes (cached by chip and setting)."""
        jitters = self.jitters  # read once: the key and the passes must agree
        if jitters == face.jitters:
            return face
        if face.jitters != 1:
            raise ValueError("describe() takes a face from faces() (one CNN pass), not one already averaged.")
        chip = np.ascontiguousarray(np.asarray(face.chip, dtype=np.uint8))
        key = f"{hashlib.blake2b(memoryview(chip), digest_size=16).hexdigest()}:{jitters}"

        def average() -> np.ndarray:
            variants = self._describe(jittered_chips(chip, jitters)[1:])  # from a fixed seed: the same every time
            passes = np.vstack([np.asarray(face.descriptor, np.float64)[None], np.asarray(variants, np.float64)])
            return passes.mean(axis=0).astype(np.float32)

        descriptor = self._single.get(self._jittered, key, average)
        return dataclasses.replace(face, descriptor=descriptor, jitters=jitters)

    def close(self) -> None:
        """Stop every worker process (each also exits by itself when the app does)."""
        for detector in self._pool.members:
            if isinstance(detector, FaceWorker):
                detector.close()

    def one_faces(self, sources: Sequence[ImageSource], on_multiple: str = "error",
                  names: Sequence[str] | None = None) -> list[tuple[Face, str] | UserInputError]:
        """`one_face` of each image, as many at once as there are detectors, in input order. An image that cannot be
        used gives its error (NoFaceError, MultipleFacesError, ImageError: UserInputErrors) in its place; any other
        error (FaceWorkerError) is raised, the earliest image's first, as one call after another would."""
        names = list(names) if names is not None else [f"image {k + 1}" for k in range(len(sources))]

        def one(k: int) -> tuple[Face, str] | UserInputError:
            try:
                return self.one_face(sources[k], on_multiple, names[k])
            except UserInputError as exc:
                return exc

        if len(self._pool) == 1 or len(sources) < 2:
            return [one(k) for k in range(len(sources))]
        # Threads only wait on a worker's pipe (the GIL is free meanwhile); the pool bounds how many run at once.
        with ThreadPoolExecutor(min(len(self._pool), len(sources)), thread_name_prefix="face") as threads:
            futures = [threads.submit(one, k) for k in range(len(sources))]
        return [future.result() for future in futures]

    def one_face(self, source: ImageSource, on_multiple: str = "error", name: str = "the image") -> tuple[Face, str]:
        """The face to compare in an image (its descriptor at the model's `jitters`), and a note for the explanation.

        on_multiple="error" raises MultipleFacesError (carrying every crop) when several faces are found;
        "largest" compares the largest face and says so in the note.
        """
        found = self.faces(source)
        if not found:
            raise NoFaceError(
                f"No face found in {name}. Use a photo where the face is frontal, unobstructed and at least "
                "about 40 pixels wide, or switch to general mode to compare whole images."
            )
        if len(found) > 1:
            if on_multiple == "largest":
                return self.describe(found[0]), f"{len(found)} faces in {name}; compared the largest."
            if on_multiple != "error":
                raise UserInputError(f"on_multiple must be 'error' or 'largest', not {on_multiple!r}.")
            raise MultipleFacesError(
                f"{len(found)} faces found in {name}; crop it to the one person you mean, "
                "or choose to compare the largest face (the pairwise tab's 'compare the largest' option).",
                crops=[face.chip for face in found],
            )
        note = f"face found in {name} after {found[0].upsample}x upsampling." if found[0].upsample else ""
        return self.describe(found[0]), note


def _whole_number(value, low: int, high: int) -> bool:
    """A whole number (not a bool) from `low` to `high`."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and low <= value <= high


def check_workers(workers: int) -> int:
    """`workers` if it is a whole number from 1 to MAX_WORKERS; otherwise a UserInputError naming the fix."""
    if not _whole_number(workers, 1, MAX_WORKERS):
        raise UserInputError(f"workers={workers!r} is not valid: set it to a whole number from 1 to {MAX_WORKERS} "
                             f"(worker processes, ~55 MB each), or leave it unset for one per core up to 2.")
    return int(workers)


def default_workers() -> int:
    """TWINSIGHT_FACE_WORKERS, else one per core up to 2: a pair has two images, and more workers than cores only
    share the same cores."""
    return settings().face_workers or min(2, os.cpu_count() or 1)


def check_jitters(jitters: int, name: str = "jitters") -> int:
    """`jitters` if it is a whole number from 1 to MAX_JITTERS; otherwise a ValueError naming `name` and the fix."""
    if not _whole_number(jitters, 1, MAX_JITTERS):
        raise UserInputError(f"{name}={jitters!r} is not valid: set it to a whole number from 1 (the face chip alone) to "
                         f"{MAX_JITTERS}; {DEFAULT_JITTERS} is the default (the chip and its mirror image).")
    return int(jitters)


_face_model_lock = threading.Lock()


def load_face_model() -> FaceModel:
    """The process-wide face model (dlib's detector loads once per worker process, ~55 MB each; the descriptor network
    once in this process). Thread-safe: the app starts it beside its other start-up work, and a request arriving
    meanwhile must not start a second one."""
    with _face_model_lock:
        return _shared_face_model()


@functools.lru_cache(maxsize=1)
def _shared_face_model() -> FaceModel:
    return FaceModel()


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two dlib descriptors (same person below 0.6)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
