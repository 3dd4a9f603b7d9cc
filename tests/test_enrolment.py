"""Enrolment scored relative to the references' own spread: the score, its card threshold and the Verifier path."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.augment import scribble_writers
from indexer.calibration import calibrate, relative_distance
from indexer.errors import UserInputError
from indexer.siamese.encoder import SiameseEncoder, build_encoder
from indexer.siamese.validation import ENROLMENT_REFERENCES, enrolment_card, enrolment_scores
from indexer.verify import Mode, Reduce, Verifier


def test_relative_distance_is_the_mean_distance_over_the_references_spread():
    assert relative_distance([0.2, 0.4], [0.1, 0.3]) == pytest.approx(0.3 / 0.2)
    with pytest.raises(UserInputError, match="at least 2 references"):
        relative_distance([0.2], [])
    with pytest.raises(UserInputError, match="copies of one image"):
        relative_distance([0.2, 0.2], [0.0])


def clustered(rng, centre, n, noise):
    vectors = centre + noise * rng.standard_normal((n, len(centre)))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_enrolment_scores_question_own_images_forgeries_and_other_writers():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16))
    # writer a varies a lot, writer b hardly: one cosine threshold cannot fit both, a relative one can
    vectors = np.vstack([clustered(rng, centres[0], 8, 0.5), clustered(rng, centres[0] + 0.8 * centres[2], 3, 0.05),
                         clustered(rng, centres[1], 8, 0.05)])
    identities = ["a/genuine"] * 8 + ["a/forged"] * 3 + ["b/genuine"] * 8
    scores, same = enrolment_scores(vectors, identities)
    # a: 3 own, 3 forgeries, 6 others; b: 3 own, no forgeries, 3 others (forgeries of a are not b's impostors)
    assert (same == 1).sum() == 6 and (same == 0).sum() == 12
    assert scores[same == 1].max() < scores[same == 0].min()
    card = enrolment_card(vectors, identities, groups=2)["enrolment"]
    assert card["references"] == ENROLMENT_REFERENCES and card["eer"] == 0.0
    assert scores[same == 1].max() <= card["threshold"] < scores[same == 0].min()
    assert "2 folders" in card["how"] and "never seen in training" in card["how"]


def test_the_enrolment_threshold_is_set_against_skilled_forgeries_when_there_are_some():
    """Random forgeries are easy; a threshold at the equal-error point over them and the skilled ones together lets
    more skilled forgeries through than one set against the skilled ones alone."""
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((3, 16))
    vectors = np.vstack([clustered(rng, centres[0], 14, 0.35), clustered(rng, centres[0] + 0.35 * centres[2], 9, 0.35),
                         clustered(rng, centres[1], 14, 0.35)])
    identities = ["a/genuine"] * 14 + ["a/forged"] * 9 + ["b/genuine"] * 14
    card = enrolment_card(vectors, identities, groups=2)["enrolment"]
    assert card["negatives"].startswith("skilled forgeries") and "skilled forgeries" in card["how"]
    skilled, same = enrolment_scores(vectors, identities, forgeries_only=True)
    assert (same == 0).sum() == 9  # a's forgeries only: no other writers
    mixed_scores, mixed_same = enrolment_scores(vectors, identities)
    mixed = -calibrate(-mixed_scores, mixed_same).threshold
    forged = skilled[same == 0]
    assert card["threshold"] < mixed and (forged <= card["threshold"]).mean() < (forged <= mixed).mean()
    # without forgeries, other identities are the negatives
    genuine_only = [i for i in identities if i != "a/forged"]
    keep = [k for k, i in enumerate(identities) if i != "a/forged"]
    assert enrolment_card(vectors[keep], genuine_only, groups=2)["enrolment"]["negatives"] == "images of other identities"


def test_no_enrolment_threshold_when_no_identity_has_more_images_than_references():
    rng = np.random.default_rng(1)
    vectors = clustered(rng, rng.standard_normal(8), 10, 0.3)
    assert enrolment_card(vectors, ["a/x"] * 5 + ["b/y"] * 5, groups=2) == {}


@pytest.fixture(scope="module")
def writers():
    labelled = scribble_writers(n_writers=2, samples=4, seed=5)
    return [[image for image, writer in labelled if writer == name] for name in sorted({w for _, w in labelled})]


def verifier_with(card: dict) -> Verifier:
    encoder = SiameseEncoder(build_encoder("conv4-28").eval(), {"mode": "signature", **card}, source="test")
    return Verifier(None, heads=[encoder])


def test_relative_enrolment_uses_the_cards_threshold_and_the_references_spread(writers):
    verifier = verifier_with({"enrolment": {"threshold": 1.7, "how": "equal-error-rate threshold on 40 enrolments"}})
    references, questioned = writers[0][:3], writers[1][0]
    result = verifier.enrol_and_compare(references, questioned, Mode.SIGNATURE, reduce="relative")
    vectors = [verifier.represent(image, Mode.SIGNATURE).vector for image in references]
    among = [verifier.distance(vectors[i], vectors[j], Mode.SIGNATURE) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert result.distance == pytest.approx(np.mean(result.reference_distances) / np.mean(among), rel=1e-5)
    assert result.reduce is Reduce.RELATIVE and result.threshold == 1.7 and result.match == (result.distance <= 1.7)
    assert "40 enrolments" in result.threshold_source and "their own spread" in result.explanation
    explicit = verifier.enrol_and_compare(references, questioned, Mode.SIGNATURE, reduce="relative", threshold=99.0)
    assert explicit.match and explicit.threshold_source == "set by you" and explicit.distance == result.distance


def test_relative_enrolment_refuses_what_it_cannot_score(writers):
    without = verifier_with({})
    with pytest.raises(UserInputError, match="threshold="):
        without.enrol_and_compare(writers[0][:3], writers[1][0], Mode.SIGNATURE, reduce="relative")
    verifier = verifier_with({"enrolment": {"threshold": 1.7}})
    with pytest.raises(UserInputError, match="at least 2 references"):
        verifier.enrol_and_compare(writers[0][:1], writers[1][0], Mode.SIGNATURE, reduce="relative")
    with pytest.raises(UserInputError, match="copies of one image"):
        verifier.enrol_and_compare([writers[0][0], writers[0][0]], writers[1][0], Mode.SIGNATURE, reduce="relative")
