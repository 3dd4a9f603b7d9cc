"""Any sequence of add / delete / commit / save / kill-and-reload gives, on disk, what the same operations give
in memory: random sequences (seeded), checked against a plain dict model after every step.

"Kill" drops the index object without saving (as a killed process would) and loads the directory again:
what comes back must be exactly the state at the last commit or save, and nothing after it.
"""
import numpy as np
import pytest

from indexer import GalleryIndex

DIM = 8
SEQUENCES = 25
STEPS = 14


def unit(rng, n):
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def state(index: GalleryIndex) -> dict[int, tuple]:
    """Everything an item is: id -> (label, source, row, vector)."""
    return {i: (index.get(i).label, index.get(i).source, index.get(i).row, index.vectors([i])[0]) for i in index.ids}


def assert_state(index: GalleryIndex, model: dict[int, tuple], where: str):
    got = state(index)
    assert sorted(got) == sorted(model), where
    for i, (label, source, row, vector) in model.items():
        assert got[i][:3] == (label, source, row), (where, i)
        np.testing.assert_allclose(got[i][3], vector, rtol=0, atol=1e-6, err_msg=f"{where}: item {i}")
    if model:  # every item is searchable after a replay, and is its own nearest neighbour
        probe = next(iter(model))
        assert index.search(vector=model[probe][3], k=1, exact=True)[0].id == probe, where


@pytest.mark.parametrize("seed", range(SEQUENCES))
def test_random_operation_sequences_match_the_in_memory_model(seed, tmp_path):
    rng = np.random.default_rng(seed)
    index = GalleryIndex(DIM, "test-model")
    index.journal_limit = int(rng.choice([2, 5, 1000]))  # small limits fold the journal into full saves often
    model: dict[int, tuple] = {}
    for k in range(int(rng.integers(1, 6))):
        vector = unit(rng, 1)
        [item_id] = index.add_vectors(vector, [f"start {k}"], [f"s/{k}.png"], [k])
        model[item_id] = (f"start {k}", f"s/{k}.png", k, vector[0])
    path = index.save(tmp_path / "ix")
    durable = dict(model)
    # Ids are never reused, deleted ones included, across a reload too: each new id is above every id issued
    # before the last commit or save (ids issued after it were never acknowledged).
    issued = durable_issued = max(model)
    log = []
    for step in range(STEPS):
        op = rng.choice(["add", "add", "delete", "commit", "commit", "save", "kill"])
        log.append(str(op))
        where = f"seed {seed}, ops {log}"
        if op == "add":
            n = int(rng.integers(1, 4))
            vectors = unit(rng, n)
            labels = [str(rng.choice(["a", "b", None])) for _ in range(n)]
            labels = [None if label == "None" else label for label in labels]
            sources = [f"p/{step}-{j}.png" for j in range(n)]
            rows = [None] * n
            ids = index.add_vectors(vectors, labels, sources, rows)
            assert min(ids) > issued, where
            issued = max(ids)
            for item_id, vector, label, source in zip(ids, vectors, labels, sources):
                model[item_id] = (label, source, None, vector)
        elif op == "delete" and model:
            victims = [int(i) for i in rng.choice(sorted(model), size=int(rng.integers(1, min(3, len(model)) + 1)), replace=False)]
            assert index.delete(victims) == len(victims), where
            for victim in victims:
                del model[victim]
        elif op == "commit":
            index.commit()
            durable, durable_issued = dict(model), issued
        elif op == "save":
            index.save()
            durable, durable_issued = dict(model), issued
        elif op == "kill":
            index = GalleryIndex.load(path)  # the old object is dropped unsaved
            index.journal_limit = int(rng.choice([2, 5, 1000]))
            model, issued = dict(durable), durable_issued
        assert_state(index, model, where)
    index.commit()
    assert_state(GalleryIndex.load(path), model, f"seed {seed}, final reload after {log}")


def test_an_id_added_and_deleted_before_a_commit_is_not_reused_after_a_reload(tmp_path):
    """The journal records the next id: the deleted item left no other trace of its id."""
    index = GalleryIndex(DIM, "test-model")
    rng = np.random.default_rng(0)
    index.add_vectors(unit(rng, 1))
    path = index.save(tmp_path / "ix")
    [gone] = index.add_vectors(unit(rng, 1))
    index.delete([gone])
    index.commit()
    assert GalleryIndex.load(path).add_vectors(unit(rng, 1))[0] > gone


def test_records_keep_arrays_of_either_byte_order(tmp_path):
    """The file is little-endian whatever the arrays given: a big-endian array reads back with its values."""
    from indexer.index import journal

    arrays = {"big": np.arange(4, dtype=">f4"), "little": np.arange(3, dtype="<i8"), "native": np.ones((2, 2), np.float32)}
    path = tmp_path / journal.JOURNAL_FILE
    end = journal.append(path, journal.encode({"kind": "test"}, arrays), 0)
    [record], read_end = journal.read(path)
    assert read_end == end == path.stat().st_size and record.header["kind"] == "test"
    for key, array in arrays.items():
        np.testing.assert_array_equal(record.array(key), array)
        assert record.array(key).dtype.byteorder in "<|=" and record.header[key]["dtype"].startswith("<")


def test_a_damaged_magic_before_the_last_record_is_reported_not_taken_for_a_torn_tail(tmp_path):
    """Taking it for a torn tail would drop the acknowledged records after it, and the next commit would cut
    them off for good. A zero-filled tail (a crash that grew the file before its data landed) is still torn."""
    from indexer.index import journal

    path = tmp_path / journal.JOURNAL_FILE
    ends = [0]
    for k in range(3):
        ends.append(journal.append(path, journal.encode({"k": k}, {"a": np.arange(3)}), ends[-1]))
    data = bytearray(path.read_bytes())
    data[ends[1]:ends[1] + 4] = b"XXXX"  # the second record's magic
    path.write_bytes(bytes(data))
    with pytest.raises(journal.JournalError, match=rf"damaged at byte {ends[1]} of {ends[3]}"):
        journal.read(path)
    path.write_bytes(bytes(data[:ends[1]]) + bytes(100))  # first record, then zeros (longer than a record's frame)
    records, end = journal.read(path)
    assert [r.header["k"] for r in records] == [0] and end == ends[1]


def test_the_journal_file_is_created_durably_and_rw_r_r(tmp_path, monkeypatch):
    """A new journal's directory entry is fsynced (else a crash can lose the whole file after its commit was
    acknowledged); later appends do not pay for that again. The file is rw-r--r--, whatever the umask."""
    import os
    import stat

    from indexer.index import journal

    synced = []
    monkeypatch.setattr(journal, "fsync_path", lambda path: synced.append(path))
    path = tmp_path / journal.JOURNAL_FILE
    old_umask = os.umask(0)
    try:
        end = journal.append(path, journal.encode({"k": 0}, {}), 0)
    finally:
        os.umask(old_umask)
    assert synced == [tmp_path] and stat.S_IMODE(path.stat().st_mode) == 0o644
    journal.append(path, journal.encode({"k": 1}, {}), end)
    assert synced == [tmp_path]


def test_deleting_a_missing_id_deletes_nothing_unless_asked_to_skip_it(tmp_path):
    index = GalleryIndex(DIM, "test-model")
    ids = index.add_vectors(unit(np.random.default_rng(0), 3))
    with pytest.raises(KeyError, match=r"No items with ids \[99\] in this index; nothing was deleted"):
        index.delete([ids[0], 99])
    assert sorted(index.ids) == sorted(ids)
    assert index.delete([ids[0], 99], missing_ok=True) == 1 and sorted(index.ids) == sorted(ids[1:])


def test_deleting_keeps_every_other_items_hamming_code_with_it(tmp_path):
    """Deletion moves the last item into the hole: its binary code must move with it (and survive a reload)."""
    from indexer.hamming import CodeKind

    index = GalleryIndex(DIM, "test-model")
    vectors = unit(np.random.default_rng(1), 40)
    ids = index.add_vectors(vectors)
    index.enable_hamming(CodeKind.SIGN)
    index.delete(ids[:5])  # the last items move into positions 0-4
    path = index.save(tmp_path / "ix")
    for current in (index, GalleryIndex.load(path)):
        for i in range(5, 40):
            hits = current.search(vector=vectors[i], k=1, metric="hamming")
            assert hits[0].id == ids[i] and hits[0].score == pytest.approx(1.0, abs=1e-5), i
