"""dlib's face detection and 5-point alignment, and the process that runs them.

dlib's Python bindings keep the GIL while they detect (tens of ms a photo, more for large ones), so in the app's
process one face comparison would stall every other request: a pure-Python thread ran at 51-68% of its speed beside
them (benchmarks/face_latency.py). indexer.face therefore runs `FaceDetector` in a child process by default, which
starts this file as a script. As a script it imports dlib, numpy and PIL only: `python -m indexer...` would import the
`indexer` package, and with it torch. Keep this file free of imports from the package. The 128-d descriptor of each
aligned chip is computed in the app's process (indexer.face_net: dlib's ResNet run in torch, which frees the GIL).

Protocol on the child's stdin/stdout, no pickle (nothing read can run code): a frame is an 8-byte little-endian
length, a JSON header, then the raw bytes of the uint8 arrays the header lists.
    parent -> child: {"kind": "faces"} + the (H, W, 3) uint8 pixels
    child -> parent: {"kind": "ready", "pid"} once the models are loaded, then per request
                     {"kind": "faces", "faces": [{"box", "upsample"}, ...]} + each face's aligned (150, 150, 3) chip,
                     or {"kind": "error", "type": exception class name, "message"}
The child exits when its stdin closes, so it never outlives the app.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import struct
import sys
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image

MODELS_PACKAGE = "face_recognition_models"
CHIP_SIZE = 150  # the ResNet's input size
CHIP_PADDING = 0.25
# Upsampling doubles the image for the HOG detector, which finds faces down to ~80 px, and costs 4x the time.
# It is tried only when nothing was found at native size, and only on images small enough to need it.
UPSAMPLE_MAX_SIDE = 1000  # upsample again only while the (upsampled) longer side is at most this
MAX_UPSAMPLE = 2
# Large photos are detected on a downscaled copy (faces in them are big); landmarks and chips use full resolution.
# The HOG detector's time grows with the pixels: a copy of at most 800 px costs ~40-80 ms, one of 1600 px ~120 ms,
# the largest part of a face's time. It finds faces down to ~80 px at that scale (a tenth of
# the photo's longer side); when it finds none, the 1600 px copy is tried before giving up.
DETECT_MAX_SIDES = (800, 1600)
# dlib's own num_jitters draws from an RNG that lives on in its model object, so the same face got a different
# descriptor on every call (0.01-0.03 apart). These are dlib's jitter ranges (dlib::jitter_image) drawn from a fixed
# seed instead: the same chip always gets the same variants, in every process.
JITTER_SEED = 0
JITTER_SHIFT = 0.02  # of the face's width
JITTER_SCALE = (0.97, 0.99999)
JITTER_DEGREES = 3.0
_LENGTH = struct.Struct("<Q")
_ARRAY_TYPES = (np.dtype(np.uint8),)


class RawFace(NamedTuple):
    """One detected face as plain data (it crosses the process boundary)."""

    box: tuple[int, int, int, int]  # left, top, right, bottom in the original image
    chip: np.ndarray  # (150, 150, 3) uint8, the aligned crop the descriptor is computed from
    upsample: int  # how many 2x upsamplings the detector needed


def models_dir() -> Path:
    """The model files of `face-recognition-models`, found without importing it: its `__init__` imports
    `pkg_resources`, which recent setuptools removed."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dlib face models are missing: pip install face-recognition-models dlib-bin")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class FaceDetector:
    """Detector and landmarks, loaded once. Not thread-safe: callers serialise."""

    def __init__(self):
        import dlib

        folder = models_dir()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))

    def detect(self, pixels: np.ndarray) -> list[RawFace]:
        """Every face in an (H, W, 3) uint8 image, in detection order, with its aligned chip."""
        dlib = self._dlib
        upsample, rects = self._detect(pixels)
        if not rects:
            return []
        shapes = dlib.full_object_detections()
        for rect in rects:
            shapes.append(self.landmarks(pixels, rect))
        chips = dlib.get_face_chips(pixels, shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
        return [RawFace((rect.left(), rect.top(), rect.right(), rect.bottom()),
                        np.ascontiguousarray(chip, dtype=np.uint8), upsample) for rect, chip in zip(rects, chips)]

    def _detect(self, pixels: np.ndarray) -> tuple[int, list]:
        """(upsampling used, face rectangles in full-resolution coordinates), from the smallest copy that has any."""
        side = max(pixels.shape[:2])
        for limit in DETECT_MAX_SIDES:
            scale = min(1.0, limit / side)
            upsample, rects = self._detect_at(pixels, scale)
            if rects or scale == 1.0:
                break
        return upsample, rects

    def _detect_at(self, pixels: np.ndarray, scale: float) -> tuple[int, list]:
        dlib = self._dlib
        side = max(pixels.shape[:2])
        small = pixels
        if scale < 1.0:
            size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
            small = np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR))
        upsample, rects = 0, self.detector(small, 0)
        while not len(rects) and upsample < MAX_UPSAMPLE and side * 2**upsample <= UPSAMPLE_MAX_SIDE:
            upsample += 1
            rects = self.detector(small, upsample)
        if scale < 1.0:
            rects = [
                dlib.rectangle(*(round(v / scale) for v in (r.left(), r.top(), r.right(), r.bottom()))) for r in rects
            ]
        return upsample, list(rects)


def jittered_chips(chip: np.ndarray, jitters: int) -> list[np.ndarray]:
    """`jitters` versions of an aligned chip: itself, its mirror image, then dlib-style jitters (a small random shift,
    zoom and rotation, mirrored half the time) from a fixed seed. The same chip always gives the same list."""
    chips = [np.ascontiguousarray(chip)]
    if jitters >= 2:
        chips.append(np.ascontiguousarray(chip[:, ::-1]))
    if jitters <= 2:
        return chips  # without dlib: the app's process (the default 2 passes) never loads it
    import dlib

    rng = np.random.default_rng(JITTER_SEED)
    side = chip.shape[0]
    inner = side - 6  # dlib jitters the chip less 3 pixels a side
    centre = (side - 1) / 2
    while len(chips) < jitters:
        dx, dy = rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, 2) * inner
        half = (int(inner / rng.uniform(*JITTER_SCALE)) - 1) / 2
        angle = np.deg2rad(rng.uniform(-JITTER_DEGREES, JITTER_DEGREES))
        box = dlib.drectangle(centre + dx - half, centre + dy - half, centre + dx + half, centre + dy + half)
        variant = dlib.extract_image_chip(chip, dlib.chip_details(box, dlib.chip_dims(side, side), angle))
        chips.append(np.ascontiguousarray(variant[:, ::-1] if rng.random() > 0.5 else variant))
    return chips


def send(stream: BinaryIO, header: dict, arrays: tuple[np.ndarray, ...] = ()) -> None:
    arrays = tuple(np.ascontiguousarray(array) for array in arrays)
    header = {**header, "arrays": [[array.dtype.str, list(array.shape)] for array in arrays]}
    text = json.dumps(header).encode()
    stream.write(_LENGTH.pack(len(text)))
    stream.write(text)
    for array in arrays:
        stream.write(memoryview(array).cast("B"))  # no copy of the pixels
    stream.flush()


def receive(stream: BinaryIO) -> tuple[dict, list[np.ndarray]]:
    """The next (header, arrays); EOFError when the other side has gone."""
    header = json.loads(_read(stream, _LENGTH.unpack(_read(stream, _LENGTH.size))[0]))
    arrays = []
    for dtype, shape in header.pop("arrays"):
        dtype = np.dtype(dtype)
        if dtype not in _ARRAY_TYPES:
            raise ValueError(f"unexpected array type {dtype} in a face worker message")
        arrays.append(np.frombuffer(_read(stream, dtype.itemsize * int(np.prod(shape))), dtype).reshape(shape))
    return header, arrays


def _read(stream: BinaryIO, size: int) -> bytearray:
    data = bytearray(size)  # writable, so the arrays made on it are too
    if stream.readinto(data) < size:
        raise EOFError("the face worker's pipe closed")
    return data


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The child's loop: load the models, say ready, answer each request until stdin closes."""
    try:
        detector = FaceDetector()
    except Exception as exc:  # noqa: BLE001 - the parent re-raises it with the same message
        send(replies, {"kind": "error", "type": type(exc).__name__, "message": str(exc)})
        return
    send(replies, {"kind": "ready", "pid": os.getpid()})
    while True:
        try:
            request, (pixels,) = receive(requests)
        except EOFError:
            return
        try:
            faces = detector.detect(pixels)
        except Exception as exc:  # noqa: BLE001 - one bad image must not end the worker
            send(replies, {"kind": "error", "type": type(exc).__name__, "message": str(exc)})
            continue
        send(replies, {"kind": "faces", "faces": [{"box": face.box, "upsample": face.upsample} for face in faces]},
             tuple(face.chip for face in faces))


def main() -> None:
    # Ctrl+C in a terminal reaches the whole process group; the app shuts the worker down by closing its stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints from C code must not corrupt the frames
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
