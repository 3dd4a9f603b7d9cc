"""The hnswlib store's add / delete / save / load, model-free: what the mutation run of the index target
(benchmarks/mutation.py index, docs/TESTING.md) found no other test pinning."""
from __future__ import annotations

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
    """meta.json's source (what a build resumes from), extra (its progress) and graph parameters come back on
    load, and a save of the loaded index writes them again (not the defaults of a new index)."""
    params = HnswParams(M=8, ef_construction=40, ef=77, seed=5)
    index = GalleryIndex(DIM, "test-model", params, source={"kind": "folder", "folder": "/photos"})
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


def test_a_vectors_file_holding_a_pickle_is_refused_without_unpickling(tmp_path):
    """No pickle anywhere: an object array in vectors.npy (a crafted index, checksums skipped) is not loaded."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (marker.write_text, ("code ran",))

    index = GalleryIndex(DIM, "test-model")
    index.add_vectors(unit(np.random.default_rng(0), 1))
    path = index.save(tmp_path / "ix")
    np.save(path / "vectors.npy", np.array([Exploit()], dtype=object), allow_pickle=True)
    with pytest.raises(IndexFormatError, match=r"vectors\.npy is missing or damaged"):
        GalleryIndex.load(path, verify=False)
    assert not marker.exists()
