"""A stroke encoder fused with a companion image model (its card's `companion`), for signature mode.

The stroke encoder sees the ink's shape at low resolution; an ImageNet model sees texture (stroke quality, pen
pressure). With EfficientNet-Lite0 the companion sees the cleaned ink at 224x512, its aspect kept (a signature is
about 2.3 times as wide as high; squeezed into 224x224 its strokes lose half their pixels), and gives two blocks:
its pooled features and the mean and spread of its stage-5 activations. Their errors differ from the encoder's, so
the mean of their distances does better than any one (docs/VERIFICATION.md).

The fused vector is each block minus its centre (its mean over the training images), L2-normalised, side by side
over sqrt(k): unit length, and its cosine distance is the mean of the k blocks' cosine distances, so everything
that compares vectors works unchanged. The centres matter: every signature's activations share a large common part,
so uncentred the stage-5 block's distances are tiny and the mean is the encoder's alone. The card's `companion`
section holds thresholds calibrated on these fused vectors (the encoder's own `threshold` stays for the encoder
alone); the centres are saved beside the weights (encoder.CENTRES_FILE).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from ..images import ImageSource, load_image
from ..signature import preprocess_signature
from .encoder import SiameseEncoder

TEXTURE_SIZE = (224, 512)  # height, width of the ink a companion with `ink_texture` sees


class ImageModel(Protocol):
    name: str

    def encode_images(self, images: Sequence[ImageSource]) -> np.ndarray: ...


def fuse(parts: Sequence[np.ndarray], centres: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """k blocks (n, d_i) -> (n, sum of d_i), unit length: each block minus its centre, normalised, side by side over
    sqrt(k), so the cosine distance is the mean of the blocks' cosine distances."""
    if centres and len(centres) != len(parts):
        raise ValueError(f"The encoder's card has centres for {len(centres)} blocks but its companion gives {len(parts) - 1} "
                         "besides the encoder's; retrain the encoder with this companion (python -m indexer.siamese train).")
    blocks = []
    for k, part in enumerate(parts):
        v = np.asarray(part, np.float32)
        if centres:
            v = v - np.asarray(centres[k], np.float32)
        blocks.append(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))
    return np.concatenate(blocks, axis=1) / np.float32(np.sqrt(len(blocks)))


def companion_parts(model: ImageModel, images: Sequence[ImageSource]) -> list[np.ndarray]:
    """The companion's blocks for the cleaned ink of each image: with `ink_texture` (EfficientNet-Lite0) its two
    texture blocks of the ink at TEXTURE_SIZE, aspect kept; otherwise its vector of signature mode's 224 px square."""
    texture = getattr(model, "ink_texture", None)
    if texture is None:
        return [model.encode_images([preprocess_signature(image) for image in images])]
    return list(texture([preprocess_signature(image, *TEXTURE_SIZE) for image in images]))


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
        if hasattr(self.companion, "ink_texture") and not self.encoder.centres:
            # calibrated on an older fusion (one uncentred vector of the square ink): its thresholds would not apply
            raise ValueError(f"{self.encoder.source} has no centres for {self.companion.name}'s texture blocks (trained by "
                             "an older Twinsight); retrain it with python -m indexer.siamese train.")
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
        # Each image is decoded once; the encoder and the companion both crop the ink from that copy.
        results: list = []
        for image in images:
            try:
                results.append(load_image(image))
            except ValueError as exc:
                results.append(exc)
        decoded = [k for k, r in enumerate(results) if not isinstance(r, Exception)]
        loaded = {k: results[k] for k in decoded}
        for k, result in zip(decoded, self.encoder.try_encode([loaded[k] for k in decoded])):
            results[k] = result
        usable = [k for k in decoded if not isinstance(results[k], Exception)]
        if usable:
            parts = [np.stack([results[k][0] for k in usable]), *companion_parts(self.companion, [loaded[k] for k in usable])]
            fused = fuse(parts, self.encoder.centres)
            for k, vector in zip(usable, fused):
                results[k] = (vector, results[k][1])
        return results
