"""Calibration against brute-force references on many random score sets, and the edges the hand cases miss.

The references below share no code with indexer.calibration: AUC counts every (same, different) comparison,
the best accuracy tries every possible decision (accept the scores at or above each distinct score, or none),
and the EER tries every threshold between, below and above the scores.
"""
from fractions import Fraction

import numpy as np
import pytest

from indexer.calibration import (Calibration, accuracy_at, best_accuracy_threshold, calibrate, equal_error_rate,
                                 error_rates, roc_auc)

CASES = 150


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unequal class sizes, ties (rounded scores), wide or narrow ranges, sometimes separable."""
    rng = np.random.default_rng(seed)
    n_same, n_different = rng.integers(1, 12), rng.integers(1, 12)
    spread = rng.choice([0.05, 1.0, 20.0])
    shift = rng.choice([0.0, 0.5, 3.0]) * spread
    same = rng.normal(shift, spread, n_same)
    different = rng.normal(0.0, spread, n_different)
    scores = np.round(np.concatenate([same, different]), int(rng.integers(0, 3)) + (2 if spread < 0.1 else 0))
    labels = np.array([1] * n_same + [0] * n_different)
    order = rng.permutation(scores.size)
    return scores[order], labels[order]


def brute_auc(scores, labels) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def brute_rates(scores, labels, threshold) -> tuple[Fraction, Fraction]:
    """Exact (false accept rate, false reject rate): ties between rates are real ties, not rounding."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return Fraction(int(np.sum(neg >= threshold)), neg.size), Fraction(int(np.sum(pos < threshold)), pos.size)


def brute_best_accuracy(scores, labels) -> float:
    decisions = [scores >= s for s in np.unique(scores)] + [np.zeros(scores.size, bool)]  # ... or accept none
    return max(float(np.mean(accept == (labels == 1))) for accept in decisions)


def brute_thresholds(scores) -> list[float]:
    unique = sorted(set(scores.tolist()))
    return [unique[0] - 1.0] + [(a + b) / 2 for a, b in zip(unique, unique[1:])] + [unique[-1] + 1.0]


def brute_eer(scores, labels) -> tuple[float, float]:
    """Smallest |FAR - FRR|, then the lowest mean error, then the lowest threshold."""
    best = min((abs(far - frr), (far + frr) / 2, t)
               for t in brute_thresholds(scores) for far, frr in [brute_rates(scores, labels, t)])
    return float(best[1]), best[2]


@pytest.mark.parametrize("seed", range(0, CASES * 3, 3))
def test_against_brute_force_references(seed):
    scores, labels = random_case(seed)
    if labels.all() or not labels.any():
        pytest.fail("random_case always gives both classes")
    assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores, labels), abs=1e-12)
    eer, threshold = equal_error_rate(scores, labels)
    assert (eer, threshold) == pytest.approx(brute_eer(scores, labels), abs=1e-9)
    accuracy, chosen = best_accuracy_threshold(scores, labels)
    assert accuracy == pytest.approx(brute_best_accuracy(scores, labels), abs=1e-12)
    assert accuracy_at(scores, labels, chosen) == pytest.approx(accuracy, abs=1e-12)  # the threshold gives it
    for t in (chosen, threshold, *scores[:3]):  # thresholds at exactly a score included
        assert error_rates(scores, labels, t) == pytest.approx(tuple(map(float, brute_rates(scores, labels, t))), abs=1e-12)
        assert accuracy_at(scores, labels, t) == pytest.approx(np.mean((scores >= t) == (labels == 1)), abs=1e-12)
    for criterion, expected in (("eer", threshold), ("accuracy", chosen)):
        cal = calibrate(scores, labels, criterion)
        assert (cal.threshold, cal.criterion) == (pytest.approx(expected, abs=1e-12), criterion)
        assert cal.eer == pytest.approx(eer) and cal.auc == pytest.approx(brute_auc(scores, labels))
        assert cal.accuracy == pytest.approx(accuracy_at(scores, labels, expected))
        assert (cal.n_same, cal.n_different) == (int(labels.sum()), int((labels == 0).sum()))
    default = calibrate(scores, labels)
    assert default.criterion == "eer" and Calibration(**default.to_dict()) == default  # what a cache file keeps


def test_a_score_equal_to_the_threshold_is_accepted():
    scores, labels = [0.5, 0.5, 0.2], [1, 0, 0]
    assert error_rates(scores, labels, 0.5) == (0.5, 0.0)  # both 0.5s accepted: one false accept, no false reject
    assert accuracy_at(scores, labels, 0.5) == pytest.approx(2 / 3)
    assert accuracy_at([0.7], [1], 0.7) == 1.0  # one pair is enough to measure


def test_accept_all_or_reject_all_when_that_is_best():
    # Same pairs dominate and a different pair scores among them: accepting everything is best (4/5).
    accuracy, threshold = best_accuracy_threshold([0.1, 0.2, 0.3, 0.4, 0.35], [1, 1, 1, 1, 0])
    assert accuracy == pytest.approx(0.8) and threshold < 0.1
    # Different pairs dominate: rejecting everything is best (4/5), above every score, even on a wide range.
    accuracy, threshold = best_accuracy_threshold([-5.0, 0.2, 3.0, 10.0, 0.15], [0, 0, 0, 0, 1])
    assert accuracy == pytest.approx(0.8) and threshold > 10.0
    # All scores tied: no threshold separates them; the EER is one half.
    eer, threshold = equal_error_rate([0.3, 0.3], [1, 0])
    assert eer == 0.5 and threshold < 0.3


def test_ties_in_best_accuracy_go_to_the_middle_candidate():
    # Candidates -0.9, 0.2, 0.4, 0.6, 0.8, 1.9: accuracy 1/2, 3/4, 1/2, 3/4, 1/2, 1/2 ... built so that the
    # best accuracy is reached at several thresholds; the middle one of them is chosen.
    scores = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5])
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    candidates = brute_thresholds(scores)
    accuracies = [np.mean((scores >= t) == (labels == 1)) for t in candidates]
    best = [t for t, a in zip(candidates, accuracies) if np.isclose(a, max(accuracies))]
    assert len(best) >= 4  # a real tie, where "middle" and "first third" differ
    assert best_accuracy_threshold(scores, labels) == (pytest.approx(max(accuracies)), pytest.approx(best[len(best) // 2]))


def test_half_precision_scores_are_thresholded_in_double_precision():
    """Scores from a bf16/fp16 model: a midpoint computed in half precision would land on a score itself."""
    scores = np.array([1000.0, 1000.5], dtype=np.float16)
    labels = [0, 1]
    _, threshold = equal_error_rate(scores, labels)
    assert 1000.0 < threshold < 1000.5
    assert accuracy_at(scores, labels, threshold) == 1.0
    assert calibrate(scores, labels).accuracy == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda: roc_auc([0.1, 0.2], [1, 1]),
     r"^Calibration needs both same-identity and different-identity pairs; got 2 same and 0 different\.$"),
    (lambda: calibrate([0.1, 0.2, 0.3], [0, 0, 0]),
     r"^Calibration needs both same-identity and different-identity pairs; got 0 same and 3 different\.$"),
    (lambda: roc_auc([0.1, float("nan")], [1, 0]),
     r"^Scores contain NaN or infinity; drop the pairs that failed before calibrating\.$"),
    (lambda: calibrate([0.1, float("inf")], [1, 0]), r"^Scores contain NaN or infinity"),
    (lambda: accuracy_at([], [], 0.5), r"^No scored pairs to measure accuracy on\.$"),
    (lambda: roc_auc([0.1, 0.2, 0.3], [1, 0]), r"^3 scores but 2 labels; give one label per scored pair\.$"),
])
def test_bad_input_messages_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
