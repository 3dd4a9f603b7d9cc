"""A stroke encoder fused with its card's companion image model (signature mode)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from indexer.augment import scribble_writers
from indexer.siamese.encoder import SiameseEncoder, build_encoder
from indexer.siamese.fused import FusedEncoder, fuse
from indexer.signature import SignatureError
from indexer.verify import Mode, Verifier


class FakeCompanion:
    """Stands in for an image model: a vector from the image's mean colour per band, and a call count."""

    def __init__(self, name="effnet-lite0"):
        self.name, self.calls = name, 0

    def encode_images(self, images):
        self.calls += 1
        vectors = np.array([[*np.asarray(image, np.float32).mean(axis=(0, 1)), 1.0] for image in images], np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_fused_vectors_are_unit_and_their_distance_is_the_mean_of_the_two():
    rng = np.random.default_rng(0)
    a1, b1 = rng.standard_normal((2, 3, 8))
    a2, b2 = rng.standard_normal((2, 3, 5))
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    fa, fb = fuse(a1, a2), fuse(b1, b2)
    assert np.allclose(np.linalg.norm(fa, axis=1), 1.0, atol=1e-6)
    expected = ((1 - np.sum(unit(a1) * unit(b1), 1)) + (1 - np.sum(unit(a2) * unit(b2), 1))) / 2
    assert np.allclose(1 - np.sum(fa * fb, 1), expected, atol=1e-6)


CARD = {"mode": "signature", "threshold": {"value": 0.3, "how": "encoder alone"},
        "companion": {"model": "effnet-lite0", "threshold": {"value": 0.2, "how": "fused pairs"},
                      "enrolment": {"threshold": 1.5, "how": "fused enrolments"}}}


@pytest.fixture(scope="module")
def encoder():
    return SiameseEncoder(build_encoder("conv4-sig").eval(), CARD, source="test-encoder")


@pytest.fixture(scope="module")
def signatures():
    return [image for image, _ in scribble_writers(n_writers=2, samples=2, seed=7)]


def test_fused_encoder_takes_the_companion_thresholds_and_fuses_each_usable_image(encoder, signatures):
    companion = FakeCompanion()
    fused = FusedEncoder(encoder, companion)
    assert fused.threshold == 0.2 and fused.card["enrolment"]["threshold"] == 1.5 and fused.card["mode"] == "signature"
    assert fused.backbone.endswith("+ effnet-lite0")
    blank = Image.new("RGB", (80, 40), "white")
    results = fused.try_encode([signatures[0], blank, signatures[1]])
    assert isinstance(results[1], SignatureError) and companion.calls == 1
    alone = encoder.try_encode([signatures[0], signatures[1]])
    for got, own in zip((results[0], results[2]), alone):
        assert got[0].shape == (encoder.module.dim + 4,) and np.linalg.norm(got[0]) == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(got[0][: encoder.module.dim] * np.sqrt(2), own[0], atol=1e-5)  # the encoder's half, unchanged


def test_fused_encoder_refuses_another_companion_than_its_card_names(encoder):
    with pytest.raises(ValueError, match="effnet-lite0"):
        FusedEncoder(encoder, FakeCompanion("open_clip:ViT-B-32"))


def test_the_verifier_fuses_with_its_own_model_when_the_card_names_it(encoder, signatures):
    companion = FakeCompanion()
    verifier = Verifier(companion, heads=[encoder])
    head = verifier.heads[Mode.SIGNATURE]
    assert isinstance(head, FusedEncoder) and head.companion is companion  # the shared model, not a second copy
    result = verifier.compare(signatures[0], signatures[2], Mode.SIGNATURE)
    assert result.threshold == 0.2 and "fused pairs" in result.threshold_source and "effnet-lite0" in result.model
    assert verifier.enrolment_threshold(Mode.SIGNATURE).value == 1.5


def test_the_encoder_works_alone_when_its_companion_cannot_be_loaded(signatures, caplog):
    card = {**CARD, "companion": {**CARD["companion"], "model": "no-such-model"}}
    encoder = SiameseEncoder(build_encoder("conv4-sig").eval(), card, source="lonely")
    with caplog.at_level(logging.WARNING, logger="indexer.verify"):
        verifier = Verifier(None, heads=[encoder])
    assert verifier.heads[Mode.SIGNATURE] is encoder and "no-such-model" in caplog.text
    assert verifier.compare(signatures[0], signatures[1], Mode.SIGNATURE).threshold == 0.3
