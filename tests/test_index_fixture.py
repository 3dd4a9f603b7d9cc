"""An index written by an earlier Twinsight (tests/fixtures/index-v2: a full save plus one journalled commit, Hamming
codes on) still opens with the same items, vectors, labels, images and search results."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from indexer import GalleryIndex, Metric, open_index

FIXTURE = Path(__file__).parent / "fixtures" / "index-v2"


def fixture_vectors(seed: int, n: int) -> np.ndarray:
    """The vectors tests/fixtures/make_index_v2.py added (the same generator), L2-normalised as the index stores them."""
    vectors = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def old_index(tmp_path) -> GalleryIndex:
    copy = tmp_path / "index-v2"
    shutil.copytree(FIXTURE, copy)  # the repository's copy stays untouched by whatever loading does
    return open_index(copy, load_model=False)


def test_old_index_loads_with_its_journal(old_index):
    # saved: ids 0..11 less 3; journalled after the save: 12 (an added image) and 13 added, 5 deleted
    assert sorted(old_index.ids) == [0, 1, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13]
    assert (old_index.model, old_index.dim, old_index.ef) == ("fixture-model", 16, 20)
    assert old_index.extra["note"] == "journalled"  # the journal's meta, not the full save's
    names = ["cat", "dog", "car"]
    for item_id in (0, 4, 11):
        item = old_index.get(item_id)
        assert (item.label, item.row, item.source) == (names[item_id % 3], item_id, f"fixture:{item_id}")
    assert old_index.get(12).label == "bird" and old_index.get(12).source == "index:images/12.png"
    assert old_index.get(13).label is None and old_index.get(13).row == 13
    assert old_index.labels() == ["bird", "car", "cat", "dog"]


def test_old_index_keeps_its_vectors_and_images(old_index):
    saved, journalled = fixture_vectors(0, 12), fixture_vectors(1, 2)
    ids = [0, 7, 11, 12, 13]
    expected = np.stack([saved[0], saved[7], saved[11], journalled[0], journalled[1]])
    np.testing.assert_allclose(old_index.vectors(ids), expected, atol=1e-6)
    assert np.array_equal(np.asarray(old_index.image(12)),
                          np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))


def test_old_index_searches(old_index):
    saved = fixture_vectors(0, 12)
    for metric in (Metric.COSINE, Metric.HAMMING):
        hits = old_index.search(vector=saved[7], k=3, metric=metric)
        assert hits[0].id == 7 and hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    assert old_index.hamming is not None and old_index.hamming.bits == 16
    filtered = old_index.search(vector=saved[7], k=5, label_filter="dog")
    assert filtered[0].id == 7 and {h.id for h in filtered} == {1, 4, 7, 10}  # every dog there is, and nothing else
    assert old_index.search(vector=saved[5], k=12)[0].id != 5  # the journal's deletion holds


def test_old_index_saves_and_reloads_the_same(old_index, tmp_path):
    before = {i: old_index.get(i) for i in old_index.ids}
    old_index.save()  # folds the journal into a full save in today's writer
    again = open_index(old_index.path, load_model=False)
    assert {i: again.get(i) for i in again.ids} == before
    np.testing.assert_allclose(again.vectors(sorted(before)), old_index.vectors(sorted(before)), atol=1e-6)
