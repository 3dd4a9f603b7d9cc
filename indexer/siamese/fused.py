"""A stroke encoder fused with a companion image model (its card's `companion`), for signature mode.

The stroke encoder sees the ink's shape at low resolution; an ImageNet model sees texture at 224 px (stroke quality,
pen pressure). Neither alone tells skilled forgeries apart (about 23% equal error rate each on held-out writers);
their errors differ, so their mean distance does better (docs/VERIFICATION.md). The fused vector is the two
L2-normalised vectors side by side over sqrt(2): unit length, and its cosine distance is the mean of the two
models' cosine distances, so everything that compares vectors works unchanged. The card's `companion` section holds
thresholds calibrated on these fused vectors (the encoder's own `threshold` stays for the encoder alone).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from ..images import ImageSource
from ..signature import preprocess_signature
from .encoder import SiameseEncoder


class ImageModel(Protocol):
    name: str

    def encode_images(self, images: Sequence[ImageSource]) -> np.ndarray: ...


def fuse(encoder_vectors: np.ndarray, companion_vectors: np.ndarray) -> np.ndarray:
    """(n, d1) and (n, d2) -> (n, d1 + d2), unit length; cosine distance = the mean of the two cosine distances."""
    def unit(v):
        v = np.asarray(v, np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    return np.concatenate([unit(encoder_vectors), unit(companion_vectors)], axis=1) / np.float32(np.sqrt(2.0))


def companion_vectors(model: ImageModel, images: Sequence[ImageSource]) -> np.ndarray:
    """The companion's vectors of the ink as signature mode prepares it for an image model (224 px, cleaned ink)."""
    return model.encode_images([preprocess_signature(image) for image in images])


@dataclass
class FusedEncoder:
    """`encoder` and `companion` as one standalone model: the Verifier's interface of SiameseEncoder."""

    encoder: SiameseEncoder
    companion: ImageModel

    standalone = True
    fine_tune_blocks = 0

    def __post_init__(self):
        section = self.encoder.card.get("companion") or {}
        if section.get("model") != self.companion.name:
            raise ValueError(f"{self.encoder.source} was calibrated with {section.get('model')!r} as its companion, "
                             f"not {self.companion.name!r}; load that model.")
        # The fused space's thresholds replace the encoder's own; the rest of the card (loss, data, terms) stays.
        self.card = {**self.encoder.card, "threshold": section.get("threshold", {}), "enrolment": section.get("enrolment", {})}

    @property
    def mode(self) -> str:
        return self.encoder.mode

    @property
    def source(self) -> str:
        return self.encoder.source

    @property
    def backbone(self) -> str:
        return f"{self.encoder.backbone} + {self.companion.name}"

    @property
    def threshold(self) -> float | None:
        value = self.card["threshold"].get("value")
        return None if value is None else float(value)

    def try_encode(self, images: Sequence[ImageSource]) -> list[tuple[np.ndarray, Image.Image] | ValueError]:
        results = self.encoder.try_encode(images)
        usable = [k for k, r in enumerate(results) if not isinstance(r, Exception)]
        if usable:
            extra = companion_vectors(self.companion, [images[k] for k in usable])
            fused = fuse(np.stack([results[k][0] for k in usable]), extra)
            for k, vector in zip(usable, fused):
                results[k] = (vector, results[k][1])
        return results
