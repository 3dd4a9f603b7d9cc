"""Calibration math against cases worked out by hand."""
import numpy as np
import pytest

from indexer.calibration import (
    accuracy_at,
    best_accuracy_threshold,
    calibrate,
    equal_error_rate,
    error_rates,
    roc_auc,
)


def test_auc_perfect_inverted_and_hand_computed():
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    # same: 0.9, 0.4; different: 0.5, 0.1. Pairs (same > different): (0.9>0.5) (0.9>0.1) (0.4>0.1) -> 3/4
    assert roc_auc([0.9, 0.4, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.75)


def test_auc_counts_ties_as_half():
    # same: 0.5, 0.7; different: 0.5, 0.2 -> (0.5 vs 0.5) tie = 0.5, the other three comparisons win: 3.5/4
    assert roc_auc([0.5, 0.7, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert roc_auc([0.3] * 4, [1, 0, 1, 0]) == pytest.approx(0.5)


def test_auc_matches_brute_force_on_random_scores():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)  # rounding makes ties
    labels = rng.integers(0, 2, size=60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(scores, labels) == pytest.approx(brute)


def test_error_rates_and_accuracy_at_threshold():
    scores = [0.9, 0.6, 0.3, 0.7, 0.2, 0.1]
    labels = [1, 1, 1, 0, 0, 0]
    # accept >= 0.5: same 0.9, 0.6 accepted, 0.3 rejected (FRR 1/3); different 0.7 accepted (FAR 1/3)
    far, frr = error_rates(scores, labels, 0.5)
    assert far == pytest.approx(1 / 3) and frr == pytest.approx(1 / 3)
    assert accuracy_at(scores, labels, 0.5) == pytest.approx(4 / 6)
    assert accuracy_at(scores, labels, 0.95) == pytest.approx(3 / 6)


def test_equal_error_rate_on_hand_case():
    scores = [0.9, 0.6, 0.3, 0.7, 0.2, 0.1]
    labels = [1, 1, 1, 0, 0, 0]
    eer, threshold = equal_error_rate(scores, labels)
    # Candidates are midpoints between sorted scores. At 0.45 FAR = 1/3 (0.7) and FRR = 1/3 (0.3):
    # the only candidate where the two rates meet (0.65 gives FAR 1/3, FRR 2/3).
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.45)


def test_equal_error_rate_is_zero_when_separable():
    eer, threshold = equal_error_rate([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])
    assert eer == 0.0
    assert 0.2 < threshold < 0.8


def test_best_accuracy_and_calibrate():
    scores = [0.9, 0.8, 0.75, 0.4, 0.3, 0.1]
    labels = [1, 1, 0, 1, 0, 0]
    accuracy, threshold = best_accuracy_threshold(scores, labels)
    # threshold 0.775 -> 5/6 (0.4 rejected); 0.35 -> 5/6 (0.75 accepted); nothing reaches 6/6
    assert accuracy == pytest.approx(5 / 6)
    assert accuracy_at(scores, labels, threshold) == pytest.approx(5 / 6)
    cal = calibrate(scores, labels, criterion="accuracy")
    assert cal.accuracy == pytest.approx(5 / 6) and cal.n_same == 3 and cal.n_different == 3
    assert cal.auc == pytest.approx(roc_auc(scores, labels))


def test_errors_are_explained():
    with pytest.raises(ValueError, match="both same-identity and different-identity"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        roc_auc([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="criterion"):
        calibrate([0.1, 0.9], [0, 1], criterion="median")
