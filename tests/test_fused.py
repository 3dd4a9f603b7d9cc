"""A stroke encoder fused with its card's companion image model (signature mode)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from indexer.augment import scribble_writers
from indexer.siamese import load_head
from indexer.siamese.encoder import CENTRES_FILE, ENCODER_FORMAT, SiameseEncoder, architecture, build_encoder
from indexer.siamese.fused import TEXTURE_SIZE, FusedEncoder, fuse
from indexer.signature import SignatureError, ink_crop
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
    fa, fb = fuse([a1, a2]), fuse([b1, b2])
    assert np.allclose(np.linalg.norm(fa, axis=1), 1.0, atol=1e-6)
    expected = ((1 - np.sum(unit(a1) * unit(b1), 1)) + (1 - np.sum(unit(a2) * unit(b2), 1))) / 2
    assert np.allclose(1 - np.sum(fa * fb, 1), expected, atol=1e-6)
    a3, b3 = rng.standard_normal((2, 3, 4))
    three = 1 - np.sum(fuse([a1, a2, a3]) * fuse([b1, b2, b3]), 1)
    assert np.allclose(three, (2 * expected + 1 - np.sum(unit(a3) * unit(b3), 1)) / 3, atol=1e-6)


def test_centres_take_out_what_every_vector_shares():
    """Without centres a large common part makes every pair look alike; minus it, the differences count."""
    rng = np.random.default_rng(1)
    own = rng.standard_normal((2, 6, 16))
    common = 50 * rng.standard_normal(16)
    a, b = own[0] + common, own[1] + common
    encoder_a, encoder_b = rng.standard_normal((2, 6, 8))
    raw = 1 - np.sum(fuse([encoder_a, a]) * fuse([encoder_b, b]), 1)
    centred = 1 - np.sum(fuse([encoder_a, a], [np.zeros(8), common]) * fuse([encoder_b, b], [np.zeros(8), common]), 1)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    encoder_part = 1 - np.sum(unit(encoder_a) * unit(encoder_b), 1)
    assert np.all(np.abs(raw - encoder_part / 2) < 0.01)  # the shared block adds almost nothing uncentred
    assert np.allclose(centred, (encoder_part + 1 - np.sum(unit(own[0]) * unit(own[1]), 1)) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="retrain"):
        fuse([encoder_a, a], [common])


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


class FakeTexture(FakeCompanion):
    """A companion with `ink_texture` (as EfficientNet-Lite0): two blocks per image, and the sizes it was given."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def ink_texture(self, images):
        self.sizes += [image.size for image in images]
        means = np.array([np.asarray(image, np.float32).mean() for image in images])
        return np.stack([means, 255 - means], 1), np.stack([means, means ** 2, np.ones_like(means)], 1)


def test_a_texture_companion_sees_the_ink_at_its_wide_size_and_is_centred(encoder, signatures):
    centres = [np.zeros(encoder.module.dim), np.array([100.0, 100.0]), np.zeros(3)]
    centred = SiameseEncoder(encoder.module, CARD, "centred", centres=centres)
    companion = FakeTexture()
    results = FusedEncoder(centred, companion).try_encode(signatures[:2])
    assert companion.sizes == [TEXTURE_SIZE[::-1]] * 2 and companion.calls == 0  # (width, height), never encode_images
    assert results[0][0].shape == (encoder.module.dim + 2 + 3,)
    means = [np.asarray(image, np.float32).mean() for image in companion_images(signatures[:2])]
    block = np.array([means[0] - 100.0, 155.0 - means[0]])
    third = np.sqrt(3)
    assert np.allclose(results[0][0][encoder.module.dim : encoder.module.dim + 2] * third, block / np.linalg.norm(block), atol=1e-4)


def companion_images(images):
    """What FusedEncoder hands a texture companion, rebuilt by another path: the ink at TEXTURE_SIZE."""
    height, width = TEXTURE_SIZE
    return [Image.fromarray(ink_crop(image, aspect=width / height)).resize((width, height), Image.Resampling.LANCZOS).convert("RGB")
            for image in images]


def test_an_encoder_without_centres_is_not_fused_with_a_texture_companion(encoder, signatures, caplog):
    """An encoder calibrated on the older fusion (no centres) keeps its own thresholds instead of wrong fused ones."""
    with pytest.raises(ValueError, match="retrain"):
        FusedEncoder(encoder, FakeTexture())
    with caplog.at_level(logging.WARNING, logger="indexer.verify"):
        verifier = Verifier(FakeTexture(), heads=[encoder])
    assert verifier.heads[Mode.SIGNATURE] is encoder and "no centres" in caplog.text
    assert verifier.compare(signatures[0], signatures[1], Mode.SIGNATURE).threshold == 0.3


def test_centres_round_trip_beside_the_weights(encoder, tmp_path):
    centres = [np.arange(encoder.module.dim, dtype=np.float32), np.array([1.5, -2.0], np.float32)]
    card = {**CARD, "format": ENCODER_FORMAT, "architecture": {"name": "conv4-sig", "config": architecture("conv4-sig")}}
    SiameseEncoder(encoder.module, card, "x", centres=centres).save(tmp_path)
    loaded = load_head(tmp_path)
    assert len(loaded.centres) == 2 and all(np.array_equal(a, b) for a, b in zip(loaded.centres, centres))
    (tmp_path / CENTRES_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="re-download"):
        load_head(tmp_path)


def test_each_image_is_decoded_once_for_both_models(encoder, signatures, tmp_path, monkeypatch):
    paths = []
    for k, image in enumerate(signatures[:2]):
        paths.append(tmp_path / f"{k}.png")
        image.save(paths[-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened.append(getattr(args[0], "name", args[0])) or real_open(*args, **kwargs))
    centred = SiameseEncoder(encoder.module, CARD, "centred", centres=[np.zeros(encoder.module.dim), np.zeros(2), np.zeros(3)])
    results = FusedEncoder(centred, FakeTexture()).try_encode([str(paths[0]), str(tmp_path / "broken.png"), str(paths[1])])
    assert isinstance(results[1], ValueError) and results[0][0].shape == results[2][0].shape == (encoder.module.dim + 5,)
    assert sorted(map(str, opened)) == sorted(map(str, [paths[0], tmp_path / "broken.png", paths[1]]))  # once each


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


def test_effnet_ink_texture_is_its_own_features_at_any_size(effnet, signatures):
    """The pooled block is the model's ordinary feature vector (checked on a square image its transform leaves
    alone), and a wide image keeps its size: 1280 pooled features and 112 channel means + 112 spreads."""
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    pooled, _ = effnet.ink_texture([photo.crop((16, 16, 240, 240))])  # what its transform keeps: the centre 224
    own = effnet.encode_images([photo])
    assert np.sum(own[0] * pooled[0] / np.linalg.norm(pooled[0])) > 0.995
    wide = companion_images(signatures[:2])
    pooled, stage = effnet.ink_texture(wide)
    assert pooled.shape == (2, 1280) and stage.shape == (2, 224) and np.isfinite(stage).all()
    assert (stage[:, 112:] > 0).all() and not np.allclose(stage[0], stage[1])
