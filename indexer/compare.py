"""One "same?" answer for two images, as users of DeepFace's `verify` and face_recognition's command line expect:
verified, distance, threshold (and where it came from), similarity, model, mode, time.

    from indexer import Mode, compare_images
    compare_images("a.jpg", "b.jpg", Mode.FACE).verified

`python -m indexer compare A B --mode face` prints `CompareResult.to_dict()` as one JSON object.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Iterable

from .images import ImageSource
from .verify import Mode, Verifier


@dataclass(frozen=True)
class CompareResult:
    verified: bool  # distance <= threshold
    distance: float
    threshold: float
    threshold_source: str  # plain language: where the threshold came from
    similarity: float  # higher = more alike (cosine, or 1 / (1 + euclidean distance) in face mode)
    model: str
    mode: str
    time: float  # seconds, loading included

    def to_dict(self) -> dict:
        return asdict(self)


def compare_images(image_a: ImageSource, image_b: ImageSource, mode: Mode | str = Mode.GENERAL, model: str = "auto",
                   threshold: float | None = None, heads: Iterable[str] = (),
                   verifier: Verifier | None = None) -> CompareResult:
    """Are two images the same thing (general), person (face) or writer (signature)?

    `model` is the embedding model spec for general and signature modes (face mode uses dlib's descriptor and
    loads no embedding model); `heads` are Siamese head folders or hub ids; a `verifier` given is used as is.
    Raises ValueError (FaceError, SignatureError, ImageError) naming the problem when an image cannot be used.
    """
    started = time.perf_counter()
    mode = Mode(mode)
    if verifier is None:
        # Loaded only when no verifier is given: a face comparison needs neither torch model.
        from .models import load_embedder
        from .siamese.head import load_head

        embedder = None if mode is Mode.FACE else load_embedder(model)
        verifier = Verifier(embedder, heads=[load_head(head) for head in heads])
    result = verifier.compare(image_a, image_b, mode, threshold)
    return CompareResult(bool(result.match), float(result.distance), float(result.threshold), result.threshold_source,
                         float(result.similarity), result.model, mode.value, round(time.perf_counter() - started, 4))
