"""Threshold calibration from scored pairs: ROC AUC, equal error rate, accuracy. Pure numpy.

Convention: a *score* is higher for more similar pairs (a similarity, or minus a distance) and a pair is
declared "same" when ``score >= threshold``. Labels are 1 for same identity, 0 for different.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .errors import UserInputError


def _as_arrays(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise UserInputError(f"{scores.size} scores but {labels.size} labels; give one label per scored pair.")
    if not np.all(np.isfinite(scores)):
        raise UserInputError("Scores contain NaN or infinity; drop the pairs that failed before calibrating.")
    return scores, labels


def _require_both_classes(labels: np.ndarray) -> None:
    if labels.all() or not labels.any():
        raise UserInputError(
            "Calibration needs both same-identity and different-identity pairs; "
            f"got {int(labels.sum())} same and {int((~labels).sum())} different."
        )


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Probability that a random same pair scores above a random different pair (ties count one half)."""
    scores, labels = _as_arrays(scores, labels)
    _require_both_classes(labels)
    pos, neg = scores[labels], scores[~labels]
    # Mann-Whitney U with average ranks, O(n log n).
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(order.size, dtype=np.float64)
    sorted_scores = np.concatenate([pos, neg])[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average_rank = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(average_rank, counts)
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def error_rates(scores: Sequence[float], labels: Sequence[int], threshold: float) -> tuple[float, float]:
    """(false accept rate, false reject rate) when pairs with ``score >= threshold`` are accepted."""
    scores, labels = _as_arrays(scores, labels)
    _require_both_classes(labels)
    accept = scores >= threshold
    return float(accept[~labels].mean()), float((~accept[labels]).mean())


def accuracy_at(scores: Sequence[float], labels: Sequence[int], threshold: float) -> float:
    """Fraction of pairs decided correctly at ``threshold``."""
    scores, labels = _as_arrays(scores, labels)
    if scores.size == 0:
        raise UserInputError("No scored pairs to measure accuracy on.")
    return float(((scores >= threshold) == labels).mean())


def _candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Midpoints between distinct scores, plus one below all and one above all."""
    unique = np.unique(scores)
    mids = (unique[:-1] + unique[1:]) / 2.0
    return np.concatenate([[unique[0] - 1.0], mids, [unique[-1] + 1.0]])


def _rates_at(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False accept and false reject rates at each threshold (vectorised with sorted scores)."""
    pos, neg = np.sort(scores[labels]), np.sort(scores[~labels])
    far = 1.0 - np.searchsorted(neg, thresholds, side="left") / neg.size
    frr = np.searchsorted(pos, thresholds, side="left") / pos.size
    return far, frr


def equal_error_rate(scores: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """(EER, threshold): the operating point where false accepts and false rejects are closest.

    The EER is the mean of the two rates there; with few pairs they rarely meet exactly.
    """
    scores, labels = _as_arrays(scores, labels)
    _require_both_classes(labels)
    thresholds = _candidate_thresholds(scores)
    far, frr = _rates_at(scores, labels, thresholds)
    # Rounded: equal gaps (1/2 - 3/7 and 4/7 - 1/2) differ in the last bits, and the tie must go to the lower error.
    gap, mean = np.round(np.abs(far - frr), 12), np.round((far + frr) / 2.0, 12)
    index = np.lexsort((mean, gap))[0]  # smallest gap, then lowest mean error
    return float(mean[index]), float(thresholds[index])


def best_accuracy_threshold(scores: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """(accuracy, threshold) maximising accuracy on these pairs; ties go to the middle candidate."""
    scores, labels = _as_arrays(scores, labels)
    _require_both_classes(labels)
    candidates = _candidate_thresholds(scores)
    far, frr = _rates_at(scores, labels, candidates)
    accuracies = (labels.sum() * (1 - frr) + (~labels).sum() * (1 - far)) / labels.size
    best = np.flatnonzero(np.isclose(accuracies, accuracies.max()))
    index = best[len(best) // 2]
    return float(accuracies[index]), float(candidates[index])


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen on scored pairs, with the numbers that justify it."""

    threshold: float  # in score units: same when score >= threshold
    criterion: str  # "eer" or "accuracy"
    auc: float
    eer: float
    accuracy: float  # at `threshold`, on the calibration pairs themselves
    n_same: int
    n_different: int

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate(scores: Sequence[float], labels: Sequence[int], criterion: str = "eer") -> Calibration:
    """Pick a threshold on scored pairs: at the equal error rate (default) or at the best accuracy."""
    scores, labels = _as_arrays(scores, labels)
    _require_both_classes(labels)
    eer, eer_threshold = equal_error_rate(scores, labels)
    if criterion == "eer":
        threshold = eer_threshold
    elif criterion == "accuracy":
        threshold = best_accuracy_threshold(scores, labels)[1]
    else:
        raise UserInputError(f"Unknown calibration criterion {criterion!r}; use 'eer' or 'accuracy'.")
    return Calibration(
        threshold=float(threshold),
        criterion=criterion,
        auc=roc_auc(scores, labels),
        eer=eer,
        accuracy=accuracy_at(scores, labels, threshold),
        n_same=int(labels.sum()),
        n_different=int((~labels).sum()),
    )


MIN_SPREAD = 1e-6  # references closer than this to one another are copies of one image: no spread to measure


def relative_distance(to_references: Sequence[float], among_references: Sequence[float]) -> float:
    """The mean distance of a questioned item to the references over the mean distance among the references.

    Writers (and people) vary: one signs the same way every time, another never does, so one cosine distance
    cannot mean "forged" for both. Measured in units of the references' own spread, a distance means the same for
    every writer (on held-out signature writers the skilled-forgery EER fell by about a quarter; docs/VERIFICATION.md).
    `among_references`: the distances of every pair of references (at least one pair)."""
    among = np.asarray(among_references, dtype=float)
    if among.size == 0:
        raise UserInputError("A relative score needs at least 2 references (5 or more recommended): enrol more "
                             "references, or score by the closest or the mean distance.")
    spread = float(among.mean())
    if spread < MIN_SPREAD:
        raise UserInputError("The references are copies of one image, so they show nothing of how the writer varies: "
                             "enrol distinct images, or score by the closest or the mean distance.")
    return float(np.mean(to_references)) / spread
