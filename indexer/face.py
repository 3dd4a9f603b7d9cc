"""Face pipeline: dlib detection, 5-point alignment, and the ResNet 128-d face descriptor.

The model files ship in the PyPI package `face-recognition-models`. Its `__init__` imports
`pkg_resources`, which recent setuptools removed, so the package is located without importing it.
dlib's published operating point: two descriptors closer than 0.6 (Euclidean) are the same person
(99.38% on LFW).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .images import ImageSource, load_image

MODELS_PACKAGE = "face_recognition_models"
DLIB_THRESHOLD = 0.6  # dlib's documented same-person distance for dlib_face_recognition_resnet_model_v1
CHIP_SIZE = 150  # the ResNet's input size
CHIP_PADDING = 0.25
# Upsampling doubles the image for the HOG detector, which finds faces down to ~80 px, and costs 4x the time.
# It is tried only when nothing was found at native size, and only on images small enough to need it.
UPSAMPLE_MAX_SIDE = 1000  # upsample again only while the (upsampled) longer side is at most this
MAX_UPSAMPLE = 2
# Large photos are detected on a downscaled copy (faces in them are big); landmarks and chips use full resolution.
DETECT_MAX_SIDE = 1600
CACHE_SIZE = 64


class FaceError(ValueError):
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

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(0, right - left) * max(0, bottom - top)


def models_dir() -> Path:
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dlib face models are missing: pip install face-recognition-models dlib-bin")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class FaceModel:
    """Detector, landmarks and descriptor, loaded once; per-image results are cached by content hash."""

    def __init__(self, cache_size: int = CACHE_SIZE):
        import dlib

        folder = models_dir()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, list[Face]] = OrderedDict()
        self._cache_size = cache_size
        self.name = "dlib-resnet-v1 (HOG detector, 5-point alignment)"

    def faces(self, source: ImageSource) -> list[Face]:
        """Every face in the image, largest first. Cached: the same image is detected and embedded once."""
        image = load_image(source)
        pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        key = hashlib.blake2b(pixels.tobytes(), digest_size=16).hexdigest() + f"{pixels.shape}"
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            found = self._detect_and_embed(pixels)
            self._cache[key] = found
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return found

    def _detect_and_embed(self, pixels: np.ndarray) -> list[Face]:
        dlib = self._dlib
        upsample, rects = self._detect(pixels)
        if not len(rects):
            return []
        shapes = dlib.full_object_detections()
        for rect in rects:
            shapes.append(self.landmarks(pixels, rect))
        chips = dlib.get_face_chips(pixels, shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
        # One batched CNN call per image, on the aligned chips (the same crops shown to the user).
        descriptors = self.encoder.compute_face_descriptor([np.asarray(c) for c in chips])
        faces = [
            Face(
                box=(rect.left(), rect.top(), rect.right(), rect.bottom()),
                descriptor=np.asarray(descriptor, dtype=np.float32),
                chip=Image.fromarray(np.asarray(chip)),
                upsample=upsample,
            )
            for rect, chip, descriptor in zip(rects, chips, descriptors)
        ]
        return sorted(faces, key=lambda face: face.area, reverse=True)

    def _detect(self, pixels: np.ndarray) -> tuple[int, list]:
        """(upsampling used, face rectangles in full-resolution coordinates)."""
        dlib = self._dlib
        side = max(pixels.shape[:2])
        scale = min(1.0, DETECT_MAX_SIDE / side)
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

    def one_face(self, source: ImageSource, on_multiple: str = "error", name: str = "the image") -> tuple[Face, str]:
        """The face to compare in an image, and a note for the explanation.

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
                return found[0], f"{len(found)} faces in {name}; compared the largest."
            if on_multiple != "error":
                raise ValueError(f"on_multiple must be 'error' or 'largest', not {on_multiple!r}.")
            raise MultipleFacesError(
                f"{len(found)} faces found in {name}; crop it to the one person you mean, "
                "or choose to compare the largest face (the pairwise tab's 'compare the largest' option).",
                crops=[face.chip for face in found],
            )
        note = f"face found in {name} after {found[0].upsample}x upsampling." if found[0].upsample else ""
        return found[0], note


@functools.lru_cache(maxsize=1)
def load_face_model() -> FaceModel:
    """The process-wide face model (dlib models are loaded once, ~100 MB)."""
    return FaceModel()


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two dlib descriptors (same person below 0.6)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
