"""The Verifier API: symmetric scores, thresholds with stated sources, enrolment, heads."""
import numpy as np
import pytest
from PIL import Image
from skimage import data

from indexer.siamese.head import CARD_FORMAT, ProjectionHead, SiameseHead
from indexer.verify import Mode, Reduce, Verifier
from verify_support import identity_image, stroke_image, tiny_embedder


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return tiny_embedder(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def verifier(embedder):
    return Verifier(embedder)


def make_head(embedder, threshold=0.25, mode="signature", backbone=None):
    card = {"format": CARD_FORMAT, "backbone": backbone or embedder.name, "mode": mode, "loss": "triplet",
            "architecture": {"in_dim": embedder.dim, "hidden_dim": 16, "out_dim": 8, "dropout": 0.0},
            "threshold": {"value": threshold, "how": "equal-error-rate threshold on 10 validation pairs"}}
    return SiameseHead(ProjectionHead(embedder.dim, 16, 8, 0.0), card, source="test-head")


def test_compare_is_symmetric_and_explained(verifier):
    a, b = identity_image(1, 0), identity_image(2, 0)
    ab, ba = verifier.compare(a, b, Mode.GENERAL), verifier.compare(b, a, Mode.GENERAL)
    assert ab.distance == ba.distance and ab.match == ba.match
    assert ab.similarity == pytest.approx(1 - ab.distance)
    assert ab.metric == "cosine distance" and len(ab.crops) == 2
    assert f"{ab.distance:.3f}" in ab.explanation and ab.threshold_source in ab.explanation
    same = verifier.compare(a, a.copy(), "general")
    assert same.distance == pytest.approx(0.0, abs=1e-5) and same.match


def test_general_default_threshold_comes_from_a_calibration_run(verifier):
    threshold = verifier.threshold(Mode.GENERAL)
    assert "calibration run" in threshold.source and "scikit-image" in threshold.source
    cal = threshold.calibration
    assert cal.n_same > 0 and cal.n_different > 0
    assert threshold.value == pytest.approx(-cal.threshold)  # stored as a distance
    result = verifier.compare(identity_image(1, 0), identity_image(1, 1), Mode.GENERAL)
    assert result.threshold == threshold.value and result.match == (result.distance <= threshold.value)


def test_explicit_threshold_overrides_and_says_so(verifier):
    a, b = identity_image(3, 0), identity_image(4, 0)
    assert verifier.compare(a, b, Mode.GENERAL, threshold=2.0).match
    refused = verifier.compare(a, b, Mode.GENERAL, threshold=-1.0)
    assert not refused.match and refused.threshold_source == "set by you" and "Different" in refused.explanation


def test_a_distance_equal_to_the_threshold_is_a_match(verifier):
    """The README's rule is `distance <= threshold`: the boundary itself is a match, a hair below it is not."""
    a, b = identity_image(3, 0), identity_image(4, 0)
    distance = verifier.compare(a, b, Mode.GENERAL).distance
    assert distance > 0
    at = verifier.compare(a, b, Mode.GENERAL, threshold=distance)
    assert at.distance == distance and at.match and "at or below" in at.explanation and "Same thing" in at.explanation
    below = verifier.compare(a, b, Mode.GENERAL, threshold=float(np.nextafter(distance, -np.inf)))
    assert not below.match and "above the threshold" in below.explanation and "Different things" in below.explanation
    references = [identity_image(3, 0), identity_image(3, 1)]
    enrolled = verifier.enrol_and_compare(references, b, Mode.GENERAL, reduce="mean")
    assert verifier.enrol_and_compare(references, b, Mode.GENERAL, "mean", threshold=enrolled.distance).match
    assert not verifier.enrol_and_compare(references, b, Mode.GENERAL, "mean",
                                          threshold=float(np.nextafter(enrolled.distance, -np.inf))).match


def test_calibrate_on_own_pairs_sets_the_mode_threshold(verifier):
    images = [identity_image(k, j) for k in range(4) for j in range(2)]
    pairs = [(images[i], images[j], i // 2 == j // 2) for i in range(8) for j in range(i + 1, 8)]
    threshold = verifier.calibrate(pairs, Mode.GENERAL)
    assert "your 28 labelled pairs" in threshold.source
    assert verifier.threshold(Mode.GENERAL) is threshold
    assert verifier.compare(images[0], images[1], "general").threshold_source == threshold.source


def test_enrolment_best_and_mean(verifier):
    references = [identity_image(5, j) for j in range(3)]
    questioned = identity_image(5, 7)
    best = verifier.enrol_and_compare(references, questioned, Mode.GENERAL, reduce="best")
    mean = verifier.enrol_and_compare(references, questioned, Mode.GENERAL, reduce=Reduce.MEAN)
    singles = [verifier.compare(r, questioned, Mode.GENERAL).distance for r in references]
    # One batch of four against pairs: thread count and kernels differ with the batch, so float32 noise (~1e-7).
    assert best.reference_distances == pytest.approx(singles, abs=1e-6)
    assert best.distance == pytest.approx(min(singles), abs=1e-6) and mean.distance == pytest.approx(np.mean(singles), abs=1e-6)
    assert "closest of 3" in best.explanation and "mean over 3" in mean.explanation
    assert len(best.crops) == 4 and best.reduce is Reduce.BEST
    with pytest.raises(ValueError, match="at least one reference"):
        verifier.enrol_and_compare([], questioned, Mode.GENERAL)


def test_signature_mode_uses_the_head_and_its_card_threshold(embedder):
    verifier = Verifier(embedder, heads=[make_head(embedder)])
    strokes = [(20, 80), (60, 20), (90, 90), (150, 30), (220, 80)]
    a = stroke_image(strokes, size=(300, 150))
    b = stroke_image(strokes, size=(400, 250), offset=(80, 60))  # same ink elsewhere on a bigger page
    result = verifier.compare(a, b, Mode.SIGNATURE)
    assert result.threshold == 0.25 and "head's card" in result.threshold_source
    assert result.distance == pytest.approx(0.0, abs=1e-3) and result.match  # cropping to the ink removes the offset
    assert "Siamese head" in result.model and "writer" in result.explanation
    # the head only applies to its own mode
    assert "head's card" not in verifier.threshold(Mode.GENERAL).source


def test_head_for_another_backbone_is_refused(embedder):
    with pytest.raises(ValueError, match="trained on effnet-lite0"):
        Verifier(embedder, heads=[make_head(embedder, backbone="effnet-lite0")])


def test_face_mode_through_the_verifier(verifier):
    astronaut = Image.fromarray(data.astronaut())
    result = verifier.compare(astronaut, astronaut.crop((60, 0, 460, 400)), Mode.FACE)
    assert result.match and result.metric == "euclidean distance" and result.threshold == 0.6
    assert "dlib" in result.threshold_source and [c.size for c in result.crops] == [(150, 150)] * 2
    from indexer.face import NoFaceError

    with pytest.raises(NoFaceError, match="image B"):
        verifier.compare(astronaut, Image.fromarray(data.coffee()), Mode.FACE)


def test_self_calibration_is_kept_on_disk_per_model_weights(embedder, tmp_path, monkeypatch):
    import torch

    from indexer import calibration_cache, verify

    monkeypatch.setenv("TWINSIGHT_INDEX_DIR", str(tmp_path / "indexes"))
    monkeypatch.setattr(verify, "_self_calibrations", {})
    first = Verifier(embedder).threshold(Mode.GENERAL)
    [kept] = (tmp_path / "indexes" / "_calibrations").glob("*.json")

    def must_not_run(*args, **kwargs):
        raise AssertionError("calibrated again instead of reading the kept calibration")

    monkeypatch.setattr(verify, "_self_calibrations", {})  # a new process: nothing in memory
    monkeypatch.setattr(Verifier, "_calibrate_labelled", must_not_run)
    again = Verifier(embedder).threshold(Mode.GENERAL)
    assert again.value == first.value and again.calibration == first.calibration and again.source == first.source

    kept.write_text("{damaged")  # a damaged file is calibrated again, not trusted
    monkeypatch.setattr(verify, "_self_calibrations", {})
    with pytest.raises(AssertionError, match="calibrated again"):
        Verifier(embedder).threshold(Mode.GENERAL)

    layer = torch.nn.Linear(4, 3)  # other weights, another fingerprint
    before = calibration_cache.weights_fingerprint(layer)
    with torch.no_grad():
        layer.weight[2, 3] += 0.5
    assert calibration_cache.weights_fingerprint(layer) != before
