"""One conformance suite, run against both stores: hnswlib (GalleryIndex) and Milvus (MilvusIndex via Milvus Lite).

add, delete, search, label filter, reload (after save and after commit), concurrent search and add, recall against brute force,
and refusal of another model's vectors (at open, at creation, and when a build would continue another index).
"""
from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from indexer import GalleryIndex, IndexMismatchError, build_index, open_index
from indexer.brute import clustered_unit_vectors, exact_search, recall_at_k
from indexer.index import MilvusIndex, VectorStore, parse_store

DIM = 32
MODEL = "vectors-only"


def make_store(kind: str, tmp_path, dim: int = DIM, saved: bool = True):
    """A new store; `saved`: it has a directory to save to (else save() needs a path)."""
    path = tmp_path / "ix" if saved else None
    if kind == "hnsw":
        return GalleryIndex(dim, MODEL, path=path)
    return MilvusIndex(dim, MODEL, store=parse_store(f"milvus:{tmp_path / 'milvus.db'}"), path=path,
                       source={"kind": "dataset", "dataset": "synthetic"})


@pytest.fixture(params=["hnsw", "milvus"])
def store(request, tmp_path):
    index = make_store(request.param, tmp_path)
    yield index
    index.close()


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return clustered_unit_vectors(n, DIM, clusters=8, seed=seed)


def _fill(index, n: int = 60, seed: int = 0):
    vectors = _vectors(n, seed)
    labels = ["rare" if i == 17 else ("a", "b", "c")[i % 3] for i in range(n)]
    ids = index.add_vectors(vectors, labels, [f"src/{i}.png" for i in range(n)], list(range(n)))
    return vectors, labels, ids


def test_add_get_and_search_finds_each_item_first(store):
    assert isinstance(store, VectorStore)
    vectors, labels, ids = _fill(store)
    assert len(store) == 60 and len(set(ids)) == 60
    assert sorted(store.ids) == sorted(ids)
    item = store.get(ids[5])
    assert (item.row, item.label, item.source) == (5, labels[5], "src/5.png")
    for i in (0, 17, 59):
        hits = store.search(vector=vectors[i], k=3)
        assert len(hits) == 3 and hits[0].id == ids[i]
        assert hits[0].score == pytest.approx(1.0, abs=1e-4) and hits[0].score >= hits[1].score >= hits[2].score
        assert (hits[0].label, hits[0].source, hits[0].row) == (labels[i], f"src/{i}.png", i)
    np.testing.assert_allclose(store.vectors([ids[3], ids[1]]), vectors[[3, 1]], atol=1e-6)
    assert store.labels() == ["a", "b", "c", "rare"]


def test_delete(store):
    vectors, _, ids = _fill(store)
    assert store.delete([ids[0], ids[1]]) == 2
    assert len(store) == 58 and ids[0] not in store and ids[2] in store
    with pytest.raises(KeyError):
        store.get(ids[0])
    assert all(h.id not in (ids[0], ids[1]) for h in store.search(vector=vectors[0], k=10))
    with pytest.raises(KeyError):  # one missing id: nothing is deleted
        store.delete([ids[2], ids[0]])
    assert ids[2] in store and len(store) == 58
    assert store.delete([ids[2], ids[0]], missing_ok=True) == 1 and len(store) == 57
    store.delete([ids[17]])
    assert "rare" not in store.labels()


def test_label_filter_finds_rare_labels(store):
    vectors, labels, ids = _fill(store)
    hits = store.search(vector=vectors[0], k=5, label_filter="rare")  # the one "rare" item, far from the query
    assert [h.id for h in hits] == [ids[17]]
    hits = store.search(vector=vectors[0], k=50, label_filter=["a", "c"])
    assert {h.label for h in hits} == {"a", "c"}
    assert len(hits) == sum(label in ("a", "c") for label in labels)
    assert store.search(vector=vectors[0], k=5, label_filter="nobody") == []


def test_reload_keeps_items_and_records_the_store(store, tmp_path):
    vectors, labels, ids = _fill(store)
    before = [(h.id, round(h.score, 4)) for h in store.search(vector=vectors[4], k=5)]
    path = store.save()
    store.close()
    meta = json.loads((path / "meta.json").read_text())
    expected_kind = "milvus" if isinstance(store, MilvusIndex) else "hnsw"
    assert (meta.get("store") or {"kind": "hnsw"})["kind"] == expected_kind
    again = open_index(path, load_model=False)
    try:
        assert type(again) is type(store) and len(again) == 60 and again.labels() == ["a", "b", "c", "rare"]
        assert [(h.id, round(h.score, 4)) for h in again.search(vector=vectors[4], k=5)] == before
        new = again.add_vectors(_vectors(1, seed=7), ["d"], ["src/new.png"], [None])
        again.delete([ids[0]])
        again.commit()  # what the app does after an addition (hnswlib: a journal append; Milvus: a save)
    finally:
        again.close()
    third = open_index(path, load_model=False)
    try:
        assert len(third) == 60 and third.get(new[0]).label == "d" and ids[0] not in third.ids
    finally:
        third.close()


def test_concurrent_search_and_add(store):
    vectors, _, _ = _fill(store, n=200)
    extra = _vectors(120, seed=3)
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher():
        try:
            while not stop.is_set():
                hits = store.search(vector=vectors[11], k=5)
                assert hits and hits[0].row == 11
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        added = []
        for start in range(0, 120, 20):
            added += store.add_vectors(extra[start:start + 20], ["new"] * 20, [""] * 20, list(range(1000 + start, 1020 + start)))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors[:1]
    assert len(store) == 320 and len(set(added)) == 120
    for i in (0, 77, 119):
        assert store.search(vector=extra[i], k=1)[0].id == added[i]


def test_recall_at_10_against_brute_force(store):
    gallery = clustered_unit_vectors(3000, DIM, clusters=30, seed=0)
    queries = clustered_unit_vectors(50, DIM, clusters=30, seed=1)
    ids = np.asarray(store.add_vectors(gallery, rows=list(range(len(gallery)))))
    truth = ids[exact_search(queries, gallery, 10)[0]]
    exact = None if isinstance(store, MilvusIndex) else False  # hnswlib: the graph, not brute force
    found = np.asarray([[h.id for h in store.search(vector=q, k=10, exact=exact)] for q in queries])
    assert recall_at_k(found, truth) >= 0.95


def test_builds_tune_ef_on_the_hnswlib_store_only(tmp_path):
    from indexer.build import tune_ef_if_due

    hnsw, milvus = make_store("hnsw", tmp_path / "h"), make_store("milvus", tmp_path)
    try:
        for index in (hnsw, milvus):
            index.add_vectors(_vectors(1_000))
        assert tune_ef_if_due(hnsw, 0.98) and hnsw.extra["ef_tuning"]["count"] == 1_000
        assert not tune_ef_if_due(milvus, 0.98) and "ef_tuning" not in milvus.extra  # its graph is not in this process
        with pytest.raises(ValueError, match="--ef"):
            milvus.tune_ef()
    finally:
        hnsw.close()
        milvus.close()


# -- refusing another model's vectors ----------------------------------------------------------------------
@dataclass
class OtherModel:
    """What the stores check of an embedder: its name and dimension (no weights needed to be refused)."""

    name: str
    dim: int


OTHERS = {"another-model": OtherModel("another-model", DIM), "another-dim": OtherModel(MODEL, 64),
          "both": OtherModel("another-model", 64)}


# Found by mutation testing (docs/TESTING.md): `Path(path or self.path or "")` is Path("."), never empty, so the
# refusal never fires. Reported for the stores' owners to fix; strict, so the fix makes this test fail until the
# marker goes.
@pytest.mark.xfail(strict=True, reason="save() with no path and no directory saves into the working directory")
@pytest.mark.parametrize("kind", ["hnsw", "milvus"])
def test_saving_a_store_that_has_no_directory_without_a_path_is_refused_and_writes_nothing(kind, tmp_path, monkeypatch):
    """Without a path to fall back on, save() must ask for one; saving into the working directory instead replaces
    it (hnswlib: the directory is swapped for the index, and the user's files in it are deleted)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("the user's own file")
    monkeypatch.chdir(work)
    store = make_store(kind, tmp_path, saved=False)
    try:
        _fill(store, n=3)
        with pytest.raises(ValueError, match="Where should the index go"):
            store.save()
    finally:
        store.close()
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("other", list(OTHERS))
def test_opening_with_another_model_or_dimension_is_refused(store, other):
    _fill(store, n=10)
    path = store.save()
    store.close()
    embedder = OTHERS[other]
    with pytest.raises(IndexMismatchError, match=rf"built with model {MODEL} \(dim {DIM}\).*loaded model "
                                                  rf"{embedder.name} \(dim {embedder.dim}\).*rebuild"):
        open_index(path, embedder)
    kind = type(store)
    with pytest.raises(IndexMismatchError, match=rf"built with model {MODEL} \(dim {DIM}\)"):
        kind.load(path, embedder)
    same = open_index(path, OtherModel(MODEL, DIM))  # the index's own model is accepted, items intact
    try:
        assert type(same) is kind and len(same) == 10
    finally:
        same.close()
    # The refusal is decided from meta.json alone, before any vector file is read (or checksummed): the user is
    # told to switch model, not that the index is damaged.
    for file in path.iterdir():
        if file.is_file() and file.name != "meta.json":
            file.unlink()
    with pytest.raises(IndexMismatchError):
        open_index(path, embedder)


@pytest.mark.parametrize("kind", ["hnsw", "milvus"])
def test_creating_a_store_for_another_models_vectors_is_refused(kind, tmp_path):
    with pytest.raises(IndexMismatchError, match=r"built with model vectors-only \(dim 32\).*loaded model another-model"):
        if kind == "hnsw":
            GalleryIndex(DIM, MODEL, embedder=OtherModel("another-model", DIM))
        else:
            MilvusIndex(DIM, MODEL, store=parse_store(f"milvus:{tmp_path / 'm.db'}"), embedder=OtherModel("another-model", DIM))


def test_a_milvus_collection_of_another_dimension_is_refused(tmp_path):
    first = make_store("milvus", tmp_path)
    _fill(first, n=10)
    collection = first.collection
    first.close()
    with pytest.raises(IndexMismatchError, match=rf"collection '{collection}'.*holds 32-d vectors, not 64-d.*another collection"):
        make_store("milvus", tmp_path, dim=64)
    again = make_store("milvus", tmp_path)  # the collection itself is untouched
    try:
        assert len(again) == 10
    finally:
        again.close()


STORES = {"hnsw": lambda tmp_path: "hnsw", "milvus": lambda tmp_path: f"milvus:{tmp_path / 'build.db'}"}


def _renamed(embedder, name: str):
    """The same weights under another name: a different model as far as an index is concerned."""
    other = copy.copy(embedder)
    other.name = name
    return other


@pytest.mark.parametrize("kind", list(STORES))
def test_build_refuses_an_out_holding_another_sources_index(kind, tiny_clip, gallery_folder, tmp_path):
    store = STORES[kind](tmp_path)
    first = build_index(gallery_folder, model=tiny_clip, out=tmp_path / "ix", store=store)
    first.close()
    other_folder = tmp_path / "other"
    (other_folder / "x" / "y").mkdir(parents=True)
    next(gallery_folder.rglob("*.png")).rename(other_folder / "x" / "y" / "a.png")
    with pytest.raises(ValueError, match=r"holds an index of .*choose another --out"):
        build_index(other_folder, model=tiny_clip, out=tmp_path / "ix", store=store)
    kept = open_index(tmp_path / "ix", tiny_clip)
    try:
        assert len(kept) == 12 and kept.source["dataset"] == first.source["dataset"]  # nothing overwritten
    finally:
        kept.close()


@pytest.mark.parametrize("kind", list(STORES))
def test_build_refuses_an_out_holding_another_models_index(kind, tiny_clip, gallery_folder, tmp_path):
    store = STORES[kind](tmp_path)
    build_index(gallery_folder, model=tiny_clip, out=tmp_path / "ix", store=store).close()
    with pytest.raises(IndexMismatchError, match=rf"built with model {tiny_clip.name} \(dim 32\).*loaded model another-model"):
        build_index(gallery_folder, model=_renamed(tiny_clip, "another-model"), out=tmp_path / "ix", store=store)


def test_build_into_an_open_index_of_another_model_is_refused(tiny_clip, gallery_folder):
    for into in (GalleryIndex(tiny_clip.dim, "another-model"), GalleryIndex(64, tiny_clip.name)):
        with pytest.raises(IndexMismatchError, match=rf"cannot add {tiny_clip.name} \(dim 32\) embeddings to an index of "
                                                     rf"{into.model} \(dim {into.dim}\)"):
            build_index(gallery_folder, model=tiny_clip, into=into)
        assert len(into) == 0
