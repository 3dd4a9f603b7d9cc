"""Nearest-neighbour label votes: classification by the labelled gallery, for any model."""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from .index import SearchHit
from .models.base import Prediction


def vote(hits: Sequence[SearchHit], top_k: int = 5) -> list[Prediction]:
    """Labels of the neighbours, weighted by similarity, as a distribution sorted best first.

    Only positive scores vote: a neighbour that is less similar than an unrelated image should not vote.
    """
    weights: dict[str, float] = defaultdict(float)
    for hit in hits:
        if hit.label is not None and hit.score > 0:
            weights[hit.label] += hit.score
    total = sum(weights.values())
    if total <= 0:
        return []
    ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))[:top_k]
    return [Prediction(label, weight / total) for label, weight in ranked]
