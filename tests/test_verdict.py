"""The verdict itself, on given distances (no model): match rule, explanation, similarity, and the distances.

test_verify.py checks the same rules through real images; these run in milliseconds, so that mutation testing
(benchmarks/mutation.py) can try every change to the verdict.
"""
import numpy as np
import pytest
from PIL import Image

from indexer.verify import Mode, Reduce, Verifier

CROPS = (Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4)))


@pytest.fixture(scope="module")
def verifier():
    return Verifier(embedder=None)


def verdict(verifier, mode, distance, threshold, notes=("", ""), **extra):
    return verifier._verdict(Mode(mode), distance, threshold, CROPS, notes, "the two images", **extra)


@pytest.mark.parametrize("mode", ["general", "signature"])
def test_match_is_distance_at_or_below_the_threshold(verifier, mode):
    for distance, threshold, match in [(0.3, 0.3, True), (0.2999, 0.3, True), (0.3001, 0.3, False), (0.0, 0.0, True)]:
        result = verdict(verifier, mode, distance, threshold)
        assert result.match is match, (distance, threshold)
        assert (result.distance, result.threshold) == (distance, threshold)
        assert result.similarity == pytest.approx(1.0 - distance)  # cosine similarity
        assert result.metric == "cosine distance" and result.threshold_source == "set by you"


def test_the_explanation_states_the_decision_its_numbers_and_their_source(verifier):
    same = verdict(verifier, "signature", 0.25, 0.25)
    assert same.explanation == ("Same writer: the cosine distance for the two images is 0.250, at or below the "
                                "threshold 0.250 (set by you).")
    different = verdict(verifier, "general", 0.5, 0.25)
    assert different.explanation == ("Different things: the cosine distance for the two images is 0.500, above the "
                                     "threshold 0.250 (set by you).")
    assert not different.match and different.notes == ()


def test_face_mode_uses_dlibs_threshold_and_a_euclidean_similarity(verifier):
    at = verdict(verifier, "face", 0.6, None)
    assert at.match and at.threshold == 0.6 and "dlib" in at.threshold_source
    assert at.metric == "euclidean distance" and at.similarity == pytest.approx(1 / 1.6)
    assert at.explanation.startswith("Same person: the euclidean distance for the two images is 0.600, at or below")
    above = verdict(verifier, "face", 0.61, None)
    assert not above.match and above.explanation.startswith("Different persons:")
    assert at.model == verifier.face_model.name


def test_notes_and_enrolment_details_are_kept(verifier):
    result = verdict(verifier, "general", 0.1, 0.2, notes=("", "2 faces in image B; compared the largest."),
                     reference_distances=(0.1, 0.4), reduce=Reduce.BEST)
    assert result.notes == ("2 faces in image B; compared the largest.",)
    assert result.explanation.endswith("(set by you). Note: 2 faces in image B; compared the largest.")
    assert result.reference_distances == (0.1, 0.4) and result.reduce is Reduce.BEST
    assert result.crops == CROPS and result.model == "no image model" and result.mode is Mode.GENERAL
    both = verdict(verifier, "general", 0.1, 0.2, notes=("Upsampled A.", "Upsampled B."))
    assert both.explanation.endswith("Note: Upsampled A. Upsampled B.")
    summary = result.to_dict()
    assert summary["match"] is True and summary["reduce"] == "best" and summary["reference_distances"] == [0.1, 0.4]


def test_distances(verifier):
    a = np.array([1.0, 0.0, 0.0], np.float32)
    b = np.array([0.0, 1.0, 0.0], np.float32)
    assert verifier.distance(a, a, "general") == pytest.approx(0.0)
    assert verifier.distance(a, b, "signature") == pytest.approx(1.0)
    assert verifier.distance(a, -a, "general") == pytest.approx(2.0)
    # Rounding past the ends of [0, 2] is clipped: never negative, never above 2.
    assert verifier.distance(a, a * 1.0000001, "general") == 0.0
    assert verifier.distance(a, -a * 1.0000001, "general") == 2.0
    assert verifier.distance(a * 3, b * 4, "face") == pytest.approx(5.0)  # euclidean, not cosine
    assert verifier.distance(a * 3, a, "face") == pytest.approx(2.0)
    many = Verifier._distances(np.stack([a, a]), np.stack([b, -a]), Mode.GENERAL)
    assert many.shape == (2,) and many == pytest.approx([1.0, 2.0])
    faces = Verifier._distances(np.stack([a * 3, a]), np.stack([a, a]), Mode.FACE)  # one distance per row
    assert faces.shape == (2,) and faces == pytest.approx([2.0, 0.0])
    assert isinstance(verifier.distance(a, b, Mode.FACE), float)
