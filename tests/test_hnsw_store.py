"""The hnswlib store's add / delete / save / load, model-free: what the mutation run of the index target
(benchmarks/mutation.py index, docs/TESTING.md) found no other test pinning."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer import GalleryIndex, HnswParams, IndexFormatError

DIM = 8


def unit(rng, n):
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_refused_deletion_names_the_first_ten_missing_ids_only():
    """The message stays short however many ids are missing (a client deleting a stale list of thousands)."""
    index = GalleryIndex(DIM, "test-model")
    index.add_vectors(unit(np.random.default_rng(0), 2))
    with pytest.raises(KeyError) as refused:
        index.delete(range(100, 150))
    assert f"ids {list(range(100, 110))} in this index" in str(refused.value)
    assert len(index) == 2


def test_deleting_an_added_image_releases_it():
    """An image added with the index is held in memory until a save or commit writes it; deleting its item first
    frees it then (a commit writes only the images of items that exist, so nothing else would)."""
    index = GalleryIndex(DIM, "test-model")
    images = [Image.new("RGB", (4, 4), (i, i, i)) for i in (10, 20)]
    kept, gone = index.add_vectors(unit(np.random.default_rng(0), 2), _images=images)
    index.delete([gone])
    assert index.store.pending_image(gone) is None
    assert index.store.pending_image(kept).getpixel((0, 0)) == (10, 10, 10)


def test_a_reload_keeps_the_source_extra_and_hnsw_parameters_through_another_save(tmp_path):
    """meta.json's source (what a build resumes from; a path in it is written as its string), extra (its progress)
    and graph parameters come back on load, and a save of the loaded index writes them again (not the defaults of
    a new index)."""
    params = HnswParams(M=8, ef_construction=40, ef=77, seed=5)
    index = GalleryIndex(DIM, "test-model", params, source={"kind": "folder", "folder": Path("/photos")})
    index.extra["build"] = {"done": 3}
    index.add_vectors(unit(np.random.default_rng(0), 5))
    path = index.save(tmp_path / "ix")
    again = GalleryIndex.load(path)
    assert again.source == {"kind": "folder", "folder": "/photos"} and again.extra == {"build": {"done": 3}}
    again.save()
    third = GalleryIndex.load(path)
    assert third.store.params == params and third.ef == 77
    assert third.source == {"kind": "folder", "folder": "/photos"} and third.extra == {"build": {"done": 3}}


def test_metadata_that_disagrees_with_the_vectors_is_refused(tmp_path):
    """Unverified (verify=False), a metadata.parquet one row short must not load as an index whose columns are
    misaligned."""
    import pyarrow.parquet as pq

    index = GalleryIndex(DIM, "test-model")
    index.add_vectors(unit(np.random.default_rng(0), 5))
    path = index.save(tmp_path / "ix")
    pq.write_table(pq.read_table(path / "metadata.parquet").slice(0, 4), path / "metadata.parquet")
    with pytest.raises(IndexFormatError, match=r"vectors \(5\) and metadata \(4\) disagree; rebuild the index\."):
        GalleryIndex.load(path, verify=False)


@pytest.mark.parametrize("name", ["vectors.npy", "hamming.npz"])
def test_an_index_file_holding_a_pickle_is_refused_without_unpickling(tmp_path, name):
    """No pickle anywhere: an object array in vectors.npy or hamming.npz (a crafted index, checksums skipped) is
    refused, and never unpickled."""
    from indexer.hamming import CodeKind

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (marker.write_text, ("code ran",))

    index = GalleryIndex(DIM, "test-model")
    index.add_vectors(unit(np.random.default_rng(0), 16))
    index.enable_hamming(CodeKind.ITQ, bits=4)
    path = index.save(tmp_path / "ix")
    payload = np.array([Exploit()], dtype=object)
    if name == "vectors.npy":
        np.save(path / name, payload, allow_pickle=True)
    else:
        np.savez(path / name, mean=payload, projection=payload)
    with pytest.raises(ValueError, match="pickle" if name == "hamming.npz" else r"vectors\.npy is missing or damaged"):
        GalleryIndex.load(path, verify=False)
    assert not marker.exists()


def test_a_reload_keeps_the_learned_hamming_projection(tmp_path):
    """ITQ codes come from a projection learned on the items: a reload must use that one (hamming.npz), or the
    codes of the items added after it would not be comparable with the stored ones."""
    from indexer.hamming import CodeKind

    index = GalleryIndex(DIM, "test-model")
    vectors = unit(np.random.default_rng(0), 64)
    index.add_vectors(vectors)
    codec = index.enable_hamming(CodeKind.ITQ, bits=6)
    again = GalleryIndex.load(index.save(tmp_path / "ix"))
    np.testing.assert_array_equal(again.hamming.mean, codec.mean)
    np.testing.assert_array_equal(again.hamming.projection, codec.projection)
    for current in (index, again):
        assert current.search(vector=vectors[9], k=1, metric="hamming")[0].id == 9


def test_a_save_failing_after_the_swap_reports_its_own_error(tmp_path, monkeypatch):
    """A failure after the new directory is in place (its fsync, say) is reported as itself, not as a
    FileNotFoundError of the cleanup of a temp directory that was already renamed; the index saved is whole."""
    from indexer.index import hnsw_files

    index = GalleryIndex(DIM, "test-model")
    index.add_vectors(unit(np.random.default_rng(0), 3))
    replace_dir = hnsw_files.directory.replace_dir

    def replace_then_fail(tmp, target):
        replace_dir(tmp, target)
        raise OSError("fsync failed")

    monkeypatch.setattr(hnsw_files.directory, "replace_dir", replace_then_fail)
    with pytest.raises(OSError, match="fsync failed"):
        index.save(tmp_path / "ix")
    assert len(GalleryIndex.load(tmp_path / "ix")) == 3


def test_a_save_writes_the_added_images_and_releases_them(tmp_path, monkeypatch):
    """After a save an added image is read from images/, not held in memory; an item deleted while the save
    checksums its files (the save holds no lock then) does not fail the save."""
    from indexer.index import hnsw_files

    index = GalleryIndex(DIM, "test-model")
    images = [Image.new("RGB", (4, 4), (i, i, i)) for i in (10, 20)]
    kept, gone = index.add_vectors(unit(np.random.default_rng(0), 2), _images=images)
    seal = hnsw_files.directory.seal

    def seal_while_deleting(tmp, meta):
        index.delete([gone])
        return seal(tmp, meta)

    monkeypatch.setattr(hnsw_files.directory, "seal", seal_while_deleting)
    index.save(tmp_path / "ix")
    assert index.store.pending_image(kept) is None
    assert index.image(kept).getpixel((0, 0)) == (10, 10, 10)


def test_vectors_of_another_dimension_are_refused_naming_the_index():
    index = GalleryIndex(DIM, "test-model")
    with pytest.raises(ValueError, match=r"Vectors have dimension 4; this index holds 8-d vectors of test-model\."):
        index.add_vectors(np.ones((2, 4), np.float32))
    assert len(index) == 0


def test_meta_json_records_what_the_index_format_documents(tmp_path):
    """docs/INDEX.md: meta.json holds, among the rest, created/saved times, library versions, and `extra` written
    as JSON (a path or a time in it as its string)."""
    from datetime import datetime

    from indexer.index import read_meta

    index = GalleryIndex(DIM, "test-model")
    index.extra["build"] = {"out": Path("/indexes/ix"), "at": datetime(2026, 1, 2, 3, 4, 5)}
    index.add_vectors(unit(np.random.default_rng(0), 2))
    meta = read_meta(index.save(tmp_path / "ix"))
    assert datetime.fromisoformat(meta["saved"]) >= datetime.fromisoformat(meta["created"])
    assert {"hnswlib", "numpy"} <= set(meta["versions"])
    assert meta["extra"] == {"build": {"out": "/indexes/ix", "at": "2026-01-02 03:04:05"}}
