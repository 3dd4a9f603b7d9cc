"""GalleryIndex.commit(): changes appended to the index directory's journal, replayed on load, folded into full
saves. (SIGKILL during commits: tests/test_reliability_crash.py.)"""
from __future__ import annotations

import hashlib
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from indexer import GalleryIndex
from indexer.hamming import CodeKind
from indexer.index import IndexFormatError, read_meta
from indexer.index.journal import JOURNAL_FILE
from indexer.index.types import HNSW_FILE, META_FILE, METADATA_FILE, VECTORS_FILE

DIM = 32
BASE_FILES = (HNSW_FILE, VECTORS_FILE, METADATA_FILE, META_FILE)


def unit(rng, n):
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def saved(tmp_path):
    """A saved index of 2,000 items (searched through its graph), and its directory."""
    index = GalleryIndex(DIM, "test-model")
    index.add_vectors(unit(np.random.default_rng(0), 2000), labels=[f"base {i % 7}" for i in range(2000)],
                      rows=list(range(2000)))
    return index, index.save(tmp_path / "ix")


def digests(path):
    return {name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in BASE_FILES}


def assert_same_index(a: GalleryIndex, b: GalleryIndex):
    """The same items with the same data (the storage order may differ: deletions swap items into holes)."""
    ids = sorted(a.ids)
    assert ids == sorted(b.ids) and len(a) == len(b)
    assert [a.get(i) for i in ids] == [b.get(i) for i in ids]  # rows, labels, sources, times
    # hnswlib normalises what it is given again on replay: the last bit of a float32 may move.
    np.testing.assert_allclose(a.vectors(ids), b.vectors(ids), rtol=0, atol=1e-6)
    assert a.store._next_id == b.store._next_id


def test_commit_appends_only_the_changes_and_a_load_replays_them(saved):
    index, path = saved
    before = digests(path)
    rng = np.random.default_rng(1)
    added = index.add_vectors(unit(rng, 5), labels=["new"] * 5, sources=["/photos/a.jpg"] * 5)
    stored = index.add_vectors(unit(rng, 1), labels=["stored"], _images=[Image.new("RGB", (9, 7), (10, 200, 30))])
    assert index.delete([3, added[1]]) == 2
    index.commit()

    assert digests(path) == before  # the full save is untouched
    journal_size = (path / JOURNAL_FILE).stat().st_size
    assert journal_size < 4 * 1024 + 6 * DIM * 4  # the changes, not the index
    reloaded = GalleryIndex.load(path)
    assert_same_index(index, reloaded)
    assert 3 not in reloaded and added[1] not in reloaded and added[0] in reloaded
    assert reloaded.image(stored[0]).getpixel((0, 0)) == (10, 200, 30)
    assert reloaded.image(stored[0]).size == (9, 7)
    assert not index.store._pending_images  # the committed image is read back from its file
    query = unit(rng, 1)[0]
    assert [h.id for h in reloaded.search(vector=query, k=10, exact=True)] == \
        [h.id for h in index.search(vector=query, k=10, exact=True)]
    assert added[0] in [h.id for h in reloaded.search(vector=index.vectors([added[0]])[0], k=1)]  # in the graph
    # New ids continue after the replayed ones (ids are never reused).
    assert reloaded.add_vectors(unit(rng, 1)) == index.add_vectors(unit(rng, 1)) == [stored[0] + 1]


def test_commits_accumulate_and_a_save_folds_them_in(saved):
    index, path = saved
    rng = np.random.default_rng(2)
    for round in range(3):
        index.add_vectors(unit(rng, 4), labels=[f"round {round}"] * 4)
        index.commit()
    index.delete([10])
    index.commit()
    assert_same_index(index, GalleryIndex.load(path))

    index.save()
    assert not (path / JOURNAL_FILE).exists()
    assert read_meta(path)["count"] == len(index)
    assert_same_index(index, GalleryIndex.load(path))


def test_commit_with_nothing_changed_writes_nothing(saved):
    index, path = saved
    before = digests(path)
    assert index.commit() == path
    assert not (path / JOURNAL_FILE).exists() and digests(path) == before


def test_commit_before_the_first_save_is_refused():
    index = GalleryIndex(DIM, "test-model")
    index.add_vectors(unit(np.random.default_rng(0), 3))
    with pytest.raises(ValueError, match=r"never saved: save\(path\)"):
        index.commit()


def test_the_journal_folds_into_a_full_save_at_its_limit(saved):
    index, path = saved
    index.journal_limit = 100
    rng = np.random.default_rng(3)
    before = digests(path)
    for _ in range(2):
        index.add_vectors(unit(rng, 40))
        index.commit()
    assert digests(path) == before and (path / JOURNAL_FILE).exists()  # 80 items: still journalled

    index.add_vectors(unit(rng, 40))
    index.commit()  # 120 > 100: one full save with everything
    assert not (path / JOURNAL_FILE).exists() and digests(path) != before
    assert read_meta(path)["count"] == 2120
    index.add_vectors(unit(rng, 40))
    index.commit()  # the count starts again from the fold
    assert (path / JOURNAL_FILE).exists() and read_meta(path)["count"] == 2120
    assert_same_index(index, GalleryIndex.load(path))
    index.add_vectors(unit(rng, 80))
    index.commit(journal_limit=120)  # a limit for this commit (builds pass a larger one)
    assert (path / JOURNAL_FILE).exists() and read_meta(path)["count"] == 2120


@pytest.mark.parametrize("change", ["ef", "hamming"])
def test_changes_the_journal_does_not_record_make_commit_a_full_save(saved, change):
    index, path = saved
    new = index.add_vectors(unit(np.random.default_rng(4), 2))
    if change == "ef":
        index.ef = 200
    else:
        index.enable_hamming(CodeKind.SIGN)
    index.commit()
    assert not (path / JOURNAL_FILE).exists()
    assert read_meta(path)["count"] == 2002
    reloaded = GalleryIndex.load(path)
    assert_same_index(index, reloaded)
    if change == "ef":
        assert reloaded.ef == 200
        return
    # The codes were saved, not just a flag: every item, old and new, is found by Hamming search on reload,
    # with the same scores as before the save.
    assert reloaded.hamming.kind is CodeKind.SIGN and reloaded.hamming.bits == index.hamming.bits
    for item_id in new + [0, 1999]:
        query = index.vectors([item_id])[0]
        before = [(h.id, round(h.score, 5)) for h in index.search(vector=query, k=3, metric="hamming")]
        after = [(h.id, round(h.score, 5)) for h in reloaded.search(vector=query, k=3, metric="hamming")]
        assert after == before and after[0][0] == item_id


@pytest.mark.parametrize("with_items", [True, False])
def test_source_and_extra_ride_in_the_journal(saved, with_items):
    """A build's progress (source.next_row, extra) is journalled with its checkpoint's items, or alone."""
    index, path = saved
    before = digests(path)
    if with_items:
        index.add_vectors(unit(np.random.default_rng(14), 3))
    index.source["next_row"] = 2003
    index.extra["last_build"] = {"embedded": 3}
    index.commit()
    assert digests(path) == before and (path / JOURNAL_FILE).exists()
    index.add_vectors(unit(np.random.default_rng(15), 1))
    index.commit()  # a record without meta: the last one that had it still counts
    reloaded = GalleryIndex.load(path)
    assert reloaded.source["next_row"] == 2003 and reloaded.extra["last_build"] == {"embedded": 3}
    assert_same_index(index, reloaded)
    size = (path / JOURNAL_FILE).stat().st_size
    reloaded.commit()  # nothing changed since the load, meta included
    assert (path / JOURNAL_FILE).stat().st_size == size


def test_replayed_additions_get_hamming_codes(tmp_path):
    index = GalleryIndex(DIM, "test-model")
    rng = np.random.default_rng(5)
    index.add_vectors(unit(rng, 1500))
    index.enable_hamming(CodeKind.SIGN)
    path = index.save(tmp_path / "ix")
    new = index.add_vectors(unit(rng, 3))
    index.commit()
    reloaded = GalleryIndex.load(path)
    for item_id in new:
        query = index.vectors([item_id])[0]
        assert reloaded.search(vector=query, k=1, metric="hamming")[0].id == item_id


def two_commits(index, path):
    rng = np.random.default_rng(6)
    first = index.add_vectors(unit(rng, 3), labels=["first"] * 3)
    index.commit()
    end_of_first = (path / JOURNAL_FILE).stat().st_size
    second = index.add_vectors(unit(rng, 3), labels=["second"] * 3)
    index.commit()
    return first, second, end_of_first


@pytest.mark.parametrize("cut", ["inside the last record", "inside its length fields"])
def test_a_torn_last_record_is_ignored_and_cut_off_by_the_next_commit(saved, caplog, cut):
    index, path = saved
    first, second, end_of_first = two_commits(index, path)
    file = path / JOURNAL_FILE
    data = file.read_bytes()
    file.write_bytes(data[: len(data) - 20] if cut == "inside the last record" else data[: end_of_first + 5])

    with caplog.at_level(logging.WARNING, logger="indexer.index.hnsw_files"):
        reloaded = GalleryIndex.load(path)
    assert "torn last record" in caplog.text
    assert set(first) <= set(reloaded.ids) and not set(second) & set(reloaded.ids)
    third = reloaded.add_vectors(unit(np.random.default_rng(7), 2), labels=["third"] * 2)
    reloaded.commit()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="indexer.index.hnsw_files"):
        again = GalleryIndex.load(path)
    assert "torn" not in caplog.text  # the commit cut the torn bytes off before appending
    assert sorted(again.labels()) == sorted({f"base {i}" for i in range(7)} | {"first", "third"})
    assert set(third) <= set(again.ids)
    assert_same_index(reloaded, again)


def test_a_damaged_record_before_the_last_is_an_error(saved):
    index, path = saved
    _, _, end_of_first = two_commits(index, path)
    file = path / JOURNAL_FILE
    data = bytearray(file.read_bytes())
    data[end_of_first - 40] ^= 0xFF  # inside the first record's vectors
    file.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=rf"{JOURNAL_FILE} is damaged at byte 0 .*delete {JOURNAL_FILE}"):
        GalleryIndex.load(path)


def test_a_journal_from_another_save_is_refused(saved, tmp_path):
    index, path = saved
    index.add_vectors(unit(np.random.default_rng(8), 2))
    index.commit()
    other = GalleryIndex(DIM, "test-model")
    other.add_vectors(unit(np.random.default_rng(9), 10))
    other_path = other.save(tmp_path / "other")
    shutil.copy(path / JOURNAL_FILE, other_path / JOURNAL_FILE)
    with pytest.raises(IndexFormatError, match="continues another save of this index"):
        GalleryIndex.load(other_path)


def test_a_damaged_committed_image_is_reported(saved):
    index, path = saved
    [item] = index.add_vectors(unit(np.random.default_rng(10), 1), _images=[Image.new("RGB", (4, 4), (1, 2, 3))])
    index.commit()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(path / "images" / f"{item}.png")
    with pytest.raises(IndexFormatError, match=rf"images/{item}.png is missing or damaged"):
        GalleryIndex.load(path)
    assert item in GalleryIndex.load(path, verify=False)  # unverified, as for the full save's files


@pytest.mark.parametrize("other_writer", ["commit", "save"])
def test_a_commit_over_another_writers_changes_saves_in_full(saved, caplog, other_writer):
    """Two processes on one directory (say the app and `python -m indexer build`): a journal record on top of
    the other's save would make the directory unloadable, so the commit is a full save (last writer wins)."""
    _, path = saved
    mine, other = GalleryIndex.load(path), GalleryIndex.load(path)
    other.add_vectors(unit(np.random.default_rng(11), 2), labels=["other"] * 2)
    other.commit() if other_writer == "commit" else other.save()
    added = mine.add_vectors(unit(np.random.default_rng(12), 2), labels=["mine"] * 2)
    with caplog.at_level(logging.WARNING, logger="indexer.index.hnsw_files"):
        mine.commit()
    assert "saved or committed by another process" in caplog.text
    assert not (path / JOURNAL_FILE).exists() and read_meta(path)["count"] == 2002
    reloaded = GalleryIndex.load(path)
    assert set(added) <= set(reloaded.ids) and "other" not in reloaded.labels()
    assert_same_index(mine, reloaded)


def test_writers_in_other_processes_wait_for_each_other(saved):
    import fcntl
    import threading

    index, path = saved
    index.add_vectors(unit(np.random.default_rng(13), 1))
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as another process's save or commit holds it
        committer = threading.Thread(target=index.commit)
        committer.start()
        committer.join(timeout=0.5)
        assert committer.is_alive() and not (path / JOURNAL_FILE).exists()
    committer.join(timeout=30)
    assert not committer.is_alive() and (path / JOURNAL_FILE).exists()


def test_additions_go_on_while_a_save_checksums_and_fsyncs(saved, monkeypatch):
    """A save holds the index only while it writes the files; an addition made while it checksums them is not in
    that save, and the next commit records it."""
    import threading

    import indexer.index.directory as index_module

    index, path = saved
    before = index.add_vectors(unit(np.random.default_rng(16), 1), labels=["before the save"])
    checksumming, release = threading.Event(), threading.Event()
    real_sha256 = index_module.sha256_file

    def slow_sha256(file):
        checksumming.set()
        assert release.wait(30)
        return real_sha256(file)

    monkeypatch.setattr(index_module, "sha256_file", slow_sha256)
    saver = threading.Thread(target=index.save)
    saver.start()
    assert checksumming.wait(30)
    during = []
    adder = threading.Thread(target=lambda: during.extend(index.add_vectors(unit(np.random.default_rng(17), 1))))
    adder.start()
    adder.join(10)
    blocked = adder.is_alive()
    release.set()
    adder.join(30)
    assert not blocked, "the addition waited for the save's checksums"
    saver.join(30)
    monkeypatch.undo()
    assert read_meta(path)["count"] == 2001  # the save is of the state when it started
    index.commit()
    reloaded = GalleryIndex.load(path)
    assert set(before + during) <= set(reloaded.ids)
    assert_same_index(index, reloaded)


def test_a_failed_save_leaves_its_changes_to_be_committed(saved, monkeypatch):
    import indexer.index.directory as index_module

    index, path = saved
    added = index.add_vectors(unit(np.random.default_rng(18), 2))
    during = []

    def disk_full(*_args):
        # an addition made while the save checksums (it holds no lock then), which the failed save must not drop
        during.extend(index.add_vectors(unit(np.random.default_rng(19), 1)))
        raise OSError("No space left on device")

    monkeypatch.setattr(index_module, "seal", disk_full)
    with pytest.raises(OSError, match="No space left"):
        index.save()
    monkeypatch.undo()
    index.commit()
    assert set(added + during) <= set(GalleryIndex.load(path).ids) and during
