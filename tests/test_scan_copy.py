"""The scan copy out of memory: saved, memory-mapped on load, and searched exactly as before (docs/INDEX.md)."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

import indexer.index.directory as directory
from indexer.brute import clustered_unit_vectors, exact_search
from indexer.index import GalleryIndex
from indexer.index.scan_copy import ScanCopy
from indexer.index.table import ItemTable, Positions


def answers(index, queries, **options):
    return [[(h.id, round(h.score, 5), h.label, h.source) for h in index.search(vector=q, k=7, **options)]
            for q in queries]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_loaded_index_scans_its_saved_vectors_in_place_and_answers_as_the_built_one(tmp_path):
    vectors = clustered_unit_vectors(3000, 48, seed=1)
    labels = [f"c{i % 13}" if i % 5 else None for i in range(3000)]
    built = GalleryIndex(48, "vectors")
    built.add_vectors(vectors, labels=labels, sources=[f"folder:x/{i}.png" for i in range(3000)],
                      rows=[i if i % 3 else None for i in range(3000)])
    built.delete(range(0, 3000, 7))
    queries = clustered_unit_vectors(12, 48, seed=2)
    expected = {name: answers(built, queries, **options) for name, options in
                [("exact", {"exact": True}), ("filtered", {"label_filter": ["c3", "c4"]}), ("graph", {"exact": False})]}
    built.save(tmp_path / "ix")
    copy = built.store._table.vectors
    assert copy.mapped_rows == len(built) and copy.memory_bytes() == 0  # the save is mapped in place of memory

    loaded = GalleryIndex.load(tmp_path / "ix")
    copy = loaded.store._table.vectors
    assert copy.mapped_rows == len(loaded) == len(built) and copy.memory_bytes() == 0
    assert copy.mapped_file == str(tmp_path / "ix" / "vectors.npy")  # a map of the file, not a copy in memory
    for name, options in [("exact", {"exact": True}), ("filtered", {"label_filter": ["c3", "c4"]}), ("graph", {"exact": False})]:
        assert answers(loaded, queries, **options) == expected[name], name
    assert [loaded.get(i) for i in loaded.ids] == [built.get(i) for i in built.ids]  # every column round-trips
    assert loaded.store.labels() == built.store.labels()


def test_changes_to_a_mapped_copy_stay_in_memory_until_the_next_save(tmp_path):
    vectors = clustered_unit_vectors(600, 32, seed=4)
    index = GalleryIndex(32, "vectors")
    index.add_vectors(vectors[:500], labels=["a"] * 250 + ["b"] * 250)
    index.save(tmp_path / "ix")
    saved = tmp_path / "ix" / "vectors.npy"
    digest = sha256(saved)
    index = GalleryIndex.load(tmp_path / "ix")
    index.delete([0, 17, 250])  # moves mapped rows: a private copy of their pages, not the file
    index.add_vectors(vectors[500:], labels=["b"] * 100)
    assert sha256(saved) == digest
    copy = index.store._table.vectors
    assert copy.mapped_rows == 497 and len(copy) == 597 and copy.memory_bytes() >= 100 * 32 * 2

    # the same operations on an index that never touched a file answer the same
    reference = GalleryIndex(32, "vectors")
    reference.add_vectors(vectors[:500], labels=["a"] * 250 + ["b"] * 250)
    reference.delete([0, 17, 250])
    reference.add_vectors(vectors[500:], labels=["b"] * 100)
    queries = vectors[[3, 260, 550]] + 0.01
    for options in ({"exact": True}, {"label_filter": "b"}):
        got = [[(h.id, round(h.score, 5)) for h in index.search(vector=q, k=5, **options)] for q in queries]
        want = [[(h.id, round(h.score, 5)) for h in reference.search(vector=q, k=5, **options)] for q in queries]
        assert got == want
    truth = exact_search(queries / np.linalg.norm(queries, axis=1, keepdims=True), reference.vectors(), 5)[0]
    assert [[h.id for h in index.search(vector=q, k=5, exact=True)] for q in queries] == \
        [[reference.ids[p] for p in row] for row in truth]

    index.save()  # folds the changes in: everything is mapped again, from the new file
    assert copy.mapped_rows == 597 and copy.memory_bytes() == 0
    assert sha256(saved) != digest
    reloaded = GalleryIndex.load(tmp_path / "ix")
    for q in queries:
        assert [h.id for h in reloaded.search(vector=q, k=5, exact=True)] == [h.id for h in reference.search(vector=q, k=5, exact=True)]


def test_a_save_taken_while_items_were_added_keeps_the_new_rows_in_memory(tmp_path, monkeypatch):
    vectors = clustered_unit_vectors(300, 16, seed=5)
    index = GalleryIndex(16, "vectors")
    index.add_vectors(vectors[:200])
    real_seal = directory.seal

    def add_meanwhile(tmp, meta):  # an addition lands between taking the state and swapping the directory in
        index.add_vectors(vectors[200:])
        return real_seal(tmp, meta)

    monkeypatch.setattr(directory, "seal", add_meanwhile)
    index.save(tmp_path / "ix")
    copy = index.store._table.vectors
    assert copy.mapped_rows == 0 and len(copy) == 300  # not re-mapped: the file lacks the new rows
    q = vectors[250]
    assert index.search(vector=q, k=1, exact=True)[0].id == 250


def test_scan_copy_rows_read_across_the_mapped_and_in_memory_parts(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(10, 4)).astype(np.float16)
    copy = ScanCopy(4)
    copy.append(rows[:6])
    copy.save(tmp_path / "v.npy")
    copy.map(tmp_path / "v.npy")
    copy.append(rows[6:])
    np.testing.assert_array_equal(copy.rows(np.array([9, 0, 6, 5])), rows[[9, 0, 6, 5]])
    np.testing.assert_array_equal(copy.all_rows(), rows)
    copy.move(9, 2)  # a row from memory over a mapped one
    copy.pop()
    expected = np.concatenate([rows[:2], rows[9:10], rows[3:9]])
    np.testing.assert_array_equal(copy.all_rows(), expected)
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), rows[:6])  # the file is untouched
    assert copy.mapped_file == str(tmp_path / "v.npy")
    for _ in range(5):
        copy.pop()
    assert copy.mapped_rows == 4 and len(copy) == 4  # popping into the mapped part drops the in-memory rows
    copy.append(rows[:1])
    np.testing.assert_array_equal(copy.all_rows(), np.concatenate([expected[:4], rows[:1]]))
    with pytest.raises(ValueError, match="shape"):
        ScanCopy(5).map(tmp_path / "v.npy")


def test_positions_refuse_ids_they_never_gave():
    positions = Positions()
    positions.set(np.array([0, 1, 5]), np.array([0, 1, 2]))
    assert 5 in positions and positions[5] == 2 and len(positions) == 3
    for unknown in (2, 6, -1, 10**18, "x", None):
        assert unknown not in positions
        with pytest.raises(KeyError):
            positions[unknown]
    assert positions.pop(1) == 1 and 1 not in positions and positions.pop(1) is None
    np.testing.assert_array_equal(positions.of(np.array([5, 0])), [2, 0])


@pytest.fixture
def tokyo(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")  # a local zone that is not UTC: times must be stored as UTC instants
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_item_table_columns_keep_none_rows_and_labels_and_utc_times(tokyo):
    from datetime import datetime, timedelta, timezone

    table = ItemTable(2)
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    table.append([0, 1], np.ones((2, 2)), [None, 7], [None, "cat"], ["a", "b"], [when, when])
    assert table.item(0).row is None and table.item(0).label is None and table.item(1).row == 7
    assert table.item(1).label == "cat" and table.item(1).added == when  # the same instant, in UTC
    assert table.item(1).added.tzinfo == timezone.utc
    assert table.arrow().column("row").to_pylist() == [None, 7]
    assert table.arrow().column("label").to_pylist() == [None, "cat"]
    assert table.arrow().schema.field("added").type == pa.timestamp("us", tz="UTC")  # as docs/INDEX.md says
    assert table.arrow().column("added").to_pylist()[1] == when
    with pytest.raises(KeyError, match=r"No item with id 99 in this index \(2 items\)"):
        table.pos(99)


def test_scan_copy_memory_setting_reads_the_saved_vectors_into_ram(tmp_path, monkeypatch):
    vectors = clustered_unit_vectors(400, 16, seed=6)
    index = GalleryIndex(16, "vectors")
    index.add_vectors(vectors)
    monkeypatch.setenv("TWINSIGHT_SCAN_COPY", "memory")
    index.save(tmp_path / "ix")
    assert index.store._table.vectors.mapped_rows == 0  # not re-mapped after the save
    loaded = GalleryIndex.load(tmp_path / "ix")
    copy = loaded.store._table.vectors
    assert copy.mapped_rows == 0 and copy.memory_bytes() == 400 * 16 * 2 and copy.mapped_file is None
    q = vectors[7] + 0.01
    assert [h.id for h in loaded.search(vector=q, k=5, exact=True)] == [h.id for h in index.search(vector=q, k=5, exact=True)]
    monkeypatch.setenv("TWINSIGHT_SCAN_COPY", "disk")
    with pytest.raises(ValueError, match="TWINSIGHT_SCAN_COPY"):
        GalleryIndex.load(tmp_path / "ix")


def test_scan_copy_auto_reads_into_memory_on_windows_only(tmp_path, monkeypatch):
    from indexer.index import hnsw_files

    monkeypatch.delenv("TWINSIGHT_SCAN_COPY", raising=False)
    monkeypatch.setattr(hnsw_files.os, "name", "posix")
    assert not hnsw_files._scan_copy_in_memory()
    monkeypatch.setattr(hnsw_files.os, "name", "nt")
    assert hnsw_files._scan_copy_in_memory()
    monkeypatch.setenv("TWINSIGHT_SCAN_COPY", "mapped")
    assert not hnsw_files._scan_copy_in_memory()


def test_hits_carry_the_label_source_and_row_each_item_was_added_with(tmp_path):
    vectors = clustered_unit_vectors(300, 16, seed=8)
    index = GalleryIndex(16, "vectors")
    index.add_vectors(vectors, labels=[f"l{i % 7}" if i % 4 else None for i in range(300)],
                      sources=[f"folder:{i}.png" for i in range(300)], rows=[i * 2 if i % 3 else None for i in range(300)])
    index.save(tmp_path / "ix")
    for loaded in (index, GalleryIndex.load(tmp_path / "ix")):
        for options in ({"exact": True}, {"exact": False}, {"label_filter": "l3"}):
            hits = loaded.search(vector=vectors[21], k=5, **options)
            assert len(hits) == 5
            if "label_filter" in options:  # exactly the best five of that label
                l3 = np.array([i for i in range(300) if i % 4 and i % 7 == 3])
                best = l3[exact_search(vectors[21:22], vectors[l3], 5)[0][0]]
                assert [h.id for h in hits] == list(best) and {h.label for h in hits} == {"l3"}
            for h in hits:
                assert h.label == (f"l{h.id % 7}" if h.id % 4 else None)
                assert h.source == f"folder:{h.id}.png" and h.row == (h.id * 2 if h.id % 3 else None)


def test_an_empty_scan_copy_has_no_rows_of_the_right_shape():
    empty = ScanCopy(6).all_rows()
    assert empty.shape == (0, 6) and empty.dtype == np.float16
