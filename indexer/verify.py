"""Pairwise verification: "same person?", "same writer?", "same thing?", with thresholds from data.

    verifier = Verifier(load_embedder("effnet-lite0"))            # + heads=[load_head("runs/sig")]
    result = verifier.compare(image_a, image_b, Mode.FACE)
    result.match, result.distance, result.threshold, result.threshold_source, result.explanation, result.crops

Every mode decides on a distance: `match = distance <= threshold`. Thresholds come, in this order, from
an explicit argument, a calibration the caller ran (`Verifier.calibrate`), the loaded head's card, and
otherwise: face mode uses dlib's documented 0.6; general and signature modes run a calibration on
data the project generates itself (augmented scikit-image photos / synthetic pen strokes), once per model.
"""
from __future__ import annotations

import enum
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from . import calibration_cache
from .calibration import Calibration, calibrate, relative_distance
from .errors import UserInputError
from .face import DLIB_THRESHOLD, FaceModel, load_face_model
from .images import ImageSource, load_image
from .models.base import Embedder
from .models.registry import load_embedder
from .signature import preprocess_signature
from .siamese.encoder import SiameseEncoder
from .siamese.fused import FusedEncoder
from .siamese.head import SiameseHead

log = logging.getLogger(__name__)

CROP_PREVIEW_SIZE = 224


class Mode(str, enum.Enum):
    GENERAL = "general"
    FACE = "face"
    SIGNATURE = "signature"


class Reduce(str, enum.Enum):
    BEST = "best"  # the closest reference decides
    MEAN = "mean"  # the mean distance to all references decides
    RELATIVE = "relative"  # the mean distance over the references' own spread (calibration.relative_distance)


@dataclass(frozen=True)
class Threshold:
    value: float  # a distance: match when distance <= value
    source: str  # plain language: where the number came from
    calibration: Calibration | None = None


@dataclass(frozen=True)
class Verification:
    """The answer to "same identity?" with everything needed to show and justify it."""

    mode: Mode
    match: bool
    distance: float
    similarity: float  # higher = more alike: cosine similarity, or 1 / (1 + euclidean distance) in face mode
    metric: str  # "cosine distance" or "euclidean distance"
    threshold: float  # match when distance <= threshold
    threshold_source: str
    explanation: str
    crops: tuple[Image.Image, ...] = field(repr=False)  # what was compared, in input order (references first)
    model: str = ""
    notes: tuple[str, ...] = ()  # e.g. "2 faces in image A; compared the largest."
    reference_distances: tuple[float, ...] = ()  # enrolment only: distance to each reference
    reduce: Reduce | None = None

    def to_dict(self) -> dict:
        """JSON-friendly summary (without the crops)."""
        return {
            "mode": self.mode.value, "match": self.match, "distance": self.distance, "similarity": self.similarity,
            "metric": self.metric, "threshold": self.threshold, "threshold_source": self.threshold_source,
            "explanation": self.explanation, "model": self.model, "notes": list(self.notes),
            "reference_distances": list(self.reference_distances), "reduce": self.reduce.value if self.reduce else None,
        }


@dataclass(frozen=True)
class Represented:
    """One image as a mode sees it: the vector compared and the crop it came from."""

    vector: np.ndarray
    crop: Image.Image
    note: str = ""


def prepare(image: ImageSource, mode: Mode | str, draft_side: int | None = None) -> Image.Image:
    """The image the backbone sees in general or signature mode (face mode uses `indexer.face`).
    draft_side: in general mode, JPEGs may be decoded at reduced scale down to this side (the model's need)."""
    mode = Mode(mode)
    if mode is Mode.SIGNATURE:
        return preprocess_signature(image)
    if mode is Mode.GENERAL:
        return load_image(image, draft_side=draft_side)
    raise ValueError("Face mode prepares images with the face pipeline (indexer.face), not prepare().")


def _preview(image: Image.Image) -> Image.Image:
    """The crop shown beside the score. Bilinear: a display image, ~0.7 ms cheaper per image than bicubic."""
    scale = min(1.0, CROP_PREVIEW_SIZE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR) if scale < 1 else image.copy()


_self_calibrations: dict[tuple[str, str, str], Threshold] = {}
_self_calibration_lock = threading.Lock()


class Verifier:
    """Compares images in one of three modes with a shared backbone, optional heads and the face model.

    `embedder` is the shared instance from `load_embedder(spec)`; it may be None for face mode only.
    """

    def __init__(
        self,
        embedder: Embedder | None,
        heads: Iterable[SiameseHead] = (),
        face_model: FaceModel | None = None,
        on_multiple_faces: str = "error",
    ):
        self.embedder = embedder
        self._face_model = face_model
        self.on_multiple_faces = on_multiple_faces  # "error" (MultipleFacesError with crops) or "largest"
        self._calibrated: dict[Mode, Threshold] = {}
        self.heads: dict[Mode, SiameseHead | SiameseEncoder] = {}
        for head in heads:
            self.add_head(head)

    # -- configuration ------------------------------------------------------------------------------------
    def add_head(self, head: SiameseHead | SiameseEncoder) -> None:
        """Use `head` for the mode it was trained for (its card's `mode`). An encoder trained end to end
        (`standalone`) runs beside the shared model and does not depend on it."""
        mode = Mode(head.mode)
        if mode is Mode.FACE:
            raise ValueError("Face mode uses dlib's face descriptor; heads apply to general and signature modes.")
        if getattr(head, "standalone", False):
            self.heads[mode] = self._with_companion(head)
            self._calibrated.pop(mode, None)
            return
        if self.embedder is None or head.backbone != self.embedder.name:
            raise ValueError(
                f"The head {head.source or ''} was trained on {head.backbone} features but the loaded model is "
                f"{getattr(self.embedder, 'name', None)}; load {head.backbone} (or retrain the head on that model)."
            )
        if head.fine_tune_blocks:
            self.embedder.prepare_trunk(head.fine_tune_blocks)
        self.heads[mode] = head
        self._calibrated.pop(mode, None)

    def _with_companion(self, encoder):
        """`encoder` fused with the image model its card calibrated it with (siamese.fused), when it names one: the
        shared model when it is that one, else that model loaded beside it. Without it, the encoder alone."""
        name = (getattr(encoder, "card", {}).get("companion") or {}).get("model")
        if not name or isinstance(encoder, FusedEncoder):
            return encoder
        try:
            companion = self.embedder if getattr(self.embedder, "name", None) == name else load_embedder(name)
            return FusedEncoder(encoder, companion)
        except Exception as exc:  # noqa: BLE001 - the encoder alone still works, with its own thresholds
            log.warning("%s: cannot fuse it with its companion model %s (%s); using the encoder alone", encoder.source, name, exc)
            return encoder

    @property
    def face_model(self) -> FaceModel:
        if self._face_model is None:
            self._face_model = load_face_model()
        return self._face_model

    def model_name(self, mode: Mode | str) -> str:
        mode = Mode(mode)
        if mode is Mode.FACE:
            return self.face_model.name
        head = self.heads.get(mode)
        name = getattr(self.embedder, "name", "no image model")
        if getattr(head, "standalone", False):
            return f"{head.backbone} (trained end to end, {head.card.get('loss')} loss)"
        if head and head.fine_tune_blocks:
            return f"{name} + Siamese head ({head.card.get('loss')}, last {head.fine_tune_blocks} block(s) fine-tuned)"
        return f"{name} + Siamese head ({head.card.get('loss')})" if head else name

    def metric(self, mode: Mode | str) -> str:
        return "euclidean distance" if Mode(mode) is Mode.FACE else "cosine distance"

    # -- thresholds ---------------------------------------------------------------------------------------
    def threshold(self, mode: Mode | str) -> Threshold:
        """The default threshold of `mode` and where it comes from."""
        mode = Mode(mode)
        if mode in self._calibrated:
            return self._calibrated[mode]
        head = self.heads.get(mode)
        if head is not None and head.threshold is not None:
            info = head.card.get("threshold", {})
            kind = "encoder" if getattr(head, "standalone", False) else "head"
            return Threshold(head.threshold, f"from the {kind}'s card: {info.get('how', 'calibrated when it was trained')}")
        if mode is Mode.FACE:
            return Threshold(DLIB_THRESHOLD, "dlib's documented default for this face model (0.6; 99.38% on LFW)")
        return self._self_calibration(mode)

    def enrolment_threshold(self, mode: Mode | str) -> Threshold:
        """The threshold of reduce="relative" (a distance in units of the references' spread): from the card of the
        mode's encoder or head, which calibrates it on enrolments of identities it never trained on."""
        mode = Mode(mode)
        head = self.heads.get(mode)
        info = (head.card.get("enrolment") or {}) if head is not None else {}
        if "threshold" not in info:
            raise UserInputError(
                f"The relative score needs a threshold calibrated for it, and {self.model_name(mode)} has none: pass "
                "threshold= (in units of the references' spread), load an encoder trained by `python -m indexer.siamese "
                "train` (its card holds one), or score by the closest or the mean distance.")
        return Threshold(float(info["threshold"]), f"from the {'encoder' if getattr(head, 'standalone', False) else 'head'}'s "
                         f"card: {info.get('how', 'calibrated on enrolments when it was trained')}")

    def _self_calibration(self, mode: Mode) -> Threshold:
        from .augment import photo_views, scribble_writers

        key = (getattr(self.embedder, "name", ""), mode.value, self.heads[mode].source if mode in self.heads else "")
        with _self_calibration_lock:
            if key not in _self_calibrations:
                what = "augmented views of scikit-image photos" if mode is Mode.GENERAL else "synthetic pen-stroke 'signatures'"
                cache = None if mode in self.heads else calibration_cache.cache_file(self.embedder, mode.value)
                calibration = calibration_cache.read(cache)
                if calibration is None:
                    labelled = photo_views() if mode is Mode.GENERAL else scribble_writers()
                    calibration = self._calibrate_labelled(labelled, mode)
                    calibration_cache.write(cache, calibration)
                _self_calibrations[key] = Threshold(
                    -calibration.threshold,
                    f"calibration run on {calibration.n_same + calibration.n_different} generated pairs ({what}; "
                    f"equal error rate {calibration.eer:.1%}); calibrate on your own pairs for a better threshold",
                    calibration,
                )
            return _self_calibrations[key]

    def _calibrate_labelled(self, labelled: Sequence[tuple[ImageSource, str]], mode: Mode) -> Calibration:
        from .augment import all_pairs

        vectors = np.stack([r.vector for r in self.represent_many([image for image, _ in labelled], mode)])
        i, j, same = all_pairs([identity for _, identity in labelled])
        distances = self._distances(vectors[i], vectors[j], mode)
        return calibrate(-distances, same)

    def calibrate(self, pairs: Sequence[tuple[ImageSource, ImageSource, bool]], mode: Mode | str, criterion: str = "eer") -> Threshold:
        """Set `mode`'s threshold from your own labelled pairs (a, b, same?) and return it."""
        mode = Mode(mode)
        cache: dict[int, Represented] = {}

        def rep(image):
            key = image if isinstance(image, (str, bytes, os.PathLike)) else id(image)
            if key not in cache:
                cache[key] = self.represent(image, mode)
            return cache[key]

        distances = [self.distance(rep(a).vector, rep(b).vector, mode) for a, b, _ in pairs]
        calibration = calibrate(-np.asarray(distances), [bool(same) for _, _, same in pairs], criterion)
        threshold = Threshold(
            -calibration.threshold,
            f"calibration run on your {len(pairs)} labelled pairs (equal error rate {calibration.eer:.1%})",
            calibration,
        )
        self._calibrated[mode] = threshold
        return threshold

    # -- representations ----------------------------------------------------------------------------------
    def represent(self, image: ImageSource, mode: Mode | str, name: str = "the image") -> Represented:
        return self.represent_many([image], mode, [name])[0]

    def represent_many(self, images: Sequence[ImageSource], mode: Mode | str, names: Sequence[str] | None = None,
                       on_multiple_faces: str | None = None) -> list[Represented]:
        """Vectors and crops of `images` in `mode` (backbone batched; face detections cached per image)."""
        results = self.try_represent_many(images, mode, names, on_multiple_faces)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def try_represent_many(
        self, images: Sequence[ImageSource], mode: Mode | str, names: Sequence[str] | None = None,
        on_multiple_faces: str | None = None,
    ) -> list[Represented | ValueError]:
        """Like `represent_many`, but an image that cannot be used gives its error (ImageError, FaceError,
        SignatureError: all ValueErrors) in its place instead of stopping the batch."""
        mode = Mode(mode)
        names = list(names) if names is not None else [f"image {k + 1}" for k in range(len(images))]
        results: list[Represented | ValueError | None] = [None] * len(images)
        if mode is Mode.FACE:  # the images at once, one per face worker (a pair costs about one image's time)
            found = self.face_model.one_faces(images, on_multiple_faces or self.on_multiple_faces, names)
            return [got if isinstance(got, Exception) else Represented(got[0].descriptor, got[0].chip, got[1])
                    for got in found]
        if getattr(self.heads.get(mode), "standalone", False):
            return [r if isinstance(r, Exception) else Represented(*r) for r in self.heads[mode].try_encode(images)]
        prepared: dict[int, Image.Image] = {}
        for k, image in enumerate(images):
            try:
                prepared[k] = prepare(image, mode, self.embedder.draft_side if self.embedder is not None else None)
            except UserInputError as exc:
                results[k] = exc
        if prepared:
            if self.embedder is None:
                raise ValueError(f"{mode.value} mode needs an image model: build the Verifier with load_embedder(...).")
            head = self.heads.get(mode)
            if head is not None and head.fine_tune_blocks:  # the head runs its own fine-tuned top blocks
                trunk = self.embedder.encode_trunk(list(prepared.values()), head.fine_tune_blocks)
                vectors = head.project_trunk(trunk)
            else:
                vectors = self.embedder.encode_images(list(prepared.values()))
                if head is not None:
                    vectors = head.project(vectors)
            for (k, crop), vector in zip(prepared.items(), vectors):
                results[k] = Represented(vector, _preview(crop))
        return results

    @staticmethod
    def _distances(a: np.ndarray, b: np.ndarray, mode: Mode) -> np.ndarray:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if mode is Mode.FACE:
            return np.linalg.norm(a - b, axis=-1)
        return np.clip(1.0 - np.sum(a * b, axis=-1), 0.0, 2.0)  # vectors are L2-normalised; clip rounding

    def distance(self, a: np.ndarray, b: np.ndarray, mode: Mode | str) -> float:
        return float(self._distances(a, b, Mode(mode)))

    # -- the API the app calls ----------------------------------------------------------------------------
    def compare(self, image_a: ImageSource, image_b: ImageSource, mode: Mode | str, threshold: float | None = None,
                on_multiple_faces: str | None = None) -> Verification:
        """Are `image_a` and `image_b` the same identity? Symmetric: swapping them gives the same answer.

        Raises FaceError (NoFaceError / MultipleFacesError) in face mode and SignatureError in signature mode
        when an image cannot be used; both are ValueErrors whose message names the problem and the fix.
        """
        mode = Mode(mode)
        a, b = self.represent_many([image_a, image_b], mode, ["image A", "image B"], on_multiple_faces)
        distance = self.distance(a.vector, b.vector, mode)
        return self._verdict(mode, distance, threshold, (a.crop, b.crop), (a.note, b.note), "the two images")

    def enrol_and_compare(
        self,
        references: Sequence[ImageSource],
        questioned: ImageSource,
        mode: Mode | str,
        reduce: Reduce | str = Reduce.BEST,
        threshold: float | None = None,
        on_multiple_faces: str | None = None,
    ) -> Verification:
        """Writer- (or person-) dependent check: compare `questioned` against every enrolled reference.

        reduce="best" decides on the closest reference, "mean" on the mean distance to all of them, "relative" on
        that mean over the mean distance among the references (how much this writer's own images vary; needs 2+
        references, and a threshold in those units: the card's enrolment threshold or `threshold`).
        """
        mode, reduce = Mode(mode), Reduce(reduce)
        if not references:
            raise UserInputError("Enrol at least one reference image before comparing a questioned one.")
        if reduce is Reduce.RELATIVE and threshold is None:
            threshold = self.enrolment_threshold(mode)  # before any image work: a missing threshold fails fast
        names = [f"reference {k + 1}" for k in range(len(references))] + ["the questioned image"]
        reps = self.represent_many([*references, questioned], mode, names, on_multiple_faces)
        refs, query = reps[:-1], reps[-1]
        distances = tuple(self.distance(r.vector, query.vector, mode) for r in refs)
        if reduce is Reduce.RELATIVE:
            among = [self.distance(a.vector, b.vector, mode) for k, a in enumerate(refs) for b in refs[k + 1:]]
            distance = relative_distance(distances, among)
            how = f"the mean over {len(refs)} references, in units of their own spread"
        else:
            distance = min(distances) if reduce is Reduce.BEST else float(np.mean(distances))
            how = f"the closest of {len(refs)} references" if reduce is Reduce.BEST else f"the mean over {len(refs)} references"
        return self._verdict(
            mode, distance, threshold, tuple(r.crop for r in reps), tuple(r.note for r in reps), how,
            reference_distances=distances, reduce=reduce,
        )

    def _verdict(self, mode, distance, threshold, crops, notes, compared, reference_distances=(), reduce=None) -> Verification:
        if isinstance(threshold, Threshold):
            chosen = threshold
        elif threshold is None:
            chosen = self.threshold(mode)
        else:
            chosen = Threshold(float(threshold), "set by you")
        match = distance <= chosen.value
        noun = {Mode.FACE: "person", Mode.SIGNATURE: "writer", Mode.GENERAL: "thing"}[mode]
        verdict = f"Same {noun}" if match else f"Different {noun}s"
        relation = "at or below" if match else "above"
        explanation = (
            f"{verdict}: the {self.metric(mode)} for {compared} is {distance:.3f}, {relation} the threshold "
            f"{chosen.value:.3f} ({chosen.source})."
        )
        notes = tuple(note for note in notes if note)
        if notes:
            explanation += " Note: " + " ".join(notes)
        similarity = 1.0 / (1.0 + distance) if mode is Mode.FACE else 1.0 - distance
        return Verification(
            mode=mode, match=bool(match), distance=float(distance), similarity=float(similarity),
            metric=self.metric(mode), threshold=float(chosen.value), threshold_source=chosen.source,
            explanation=explanation, crops=tuple(crops), model=self.model_name(mode), notes=notes,
            reference_distances=tuple(reference_distances), reduce=reduce,
        )
