import pytest

from indexer import SearchHit
from indexer.knn import vote


def _hit(label, score):
    return SearchHit(id=0, score=score, label=label, source="", row=None)


def test_votes_are_similarity_weighted_and_sorted():
    predictions = vote([_hit("cat", 0.9), _hit("dog", 0.8), _hit("cat", 0.3), _hit(None, 0.99), _hit("car", -0.5)], top_k=5)
    assert [p.label for p in predictions] == ["cat", "dog"]  # unlabelled and negative scores do not vote
    assert predictions[0].score == pytest.approx(1.2 / 2.0)
    assert predictions[1].score == pytest.approx(0.8 / 2.0)


def test_top_k_and_empty():
    assert [p.label for p in vote([_hit("a", 0.5), _hit("b", 0.4), _hit("c", 0.3)], top_k=2)] == ["a", "b"]
    assert vote([], 3) == [] and vote([_hit(None, 0.9)], 3) == []
