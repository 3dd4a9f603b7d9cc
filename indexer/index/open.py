"""The two kinds of gallery, and opening an index directory as the kind its meta.json records.

    GalleryIndex(dim, model)                       a new gallery on the hnswlib store (vectors in this process)
    MilvusIndex(dim, model, store=StoreSpec(...))  a new gallery on a Milvus collection
    open_index(DIR) / GalleryIndex.load(DIR)       an index directory, whichever store it records
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .directory import read_meta
from .gallery import Gallery
from .hnsw import HnswStore
from .milvus import MilvusStore
from .store import HNSW, StoreSpec
from .types import MIN_CAPACITY, HnswParams, check_embedder

if TYPE_CHECKING:
    from ..models import Embedder


class GalleryIndex(Gallery):
    """A gallery on the hnswlib store (HnswStore): graph, float16 scan copy and metadata in this process, saved
    to and journalled in an index directory."""

    def __init__(self, dim: int, model: str, params: HnswParams = HnswParams(), *, embedder: "Embedder | None" = None,
                 source: dict | None = None, path: str | os.PathLike | None = None, capacity: int = MIN_CAPACITY):
        check_embedder(path or "(new index)", model, dim, embedder)  # before the graph is allocated
        super().__init__(HnswStore(dim, model, params, source=source, path=path, capacity=capacity), embedder)

    @classmethod
    def load(cls, path: str | os.PathLike, embedder: "Embedder | None" = None, *, ef: int | None = None,
             verify: bool = True) -> Gallery:
        """Load an index directory (a MilvusIndex if its vectors are in Milvus). With an embedder, refuses an
        index built by another model or dimension."""
        return load_index(path, embedder, ef=ef, verify=verify)


class MilvusIndex(Gallery):
    """A gallery on a Milvus collection (MilvusStore). Not available here: Hamming mode, exact (brute force)
    search and tune_ef."""

    def __init__(self, dim: int, model: str, params: HnswParams = HnswParams(), *, store: StoreSpec,
                 embedder: "Embedder | None" = None, source: dict | None = None, path=None, index: dict | None = None,
                 expected: int = 0, create: bool = True):
        check_embedder(path or "(new index)", model, dim, embedder)  # before connecting
        super().__init__(MilvusStore(dim, model, params, store=store, source=source, path=path, index=index,
                                     expected=expected, create=create), embedder)

    load = GalleryIndex.load

    collection = property(lambda self: self.store.collection)
    index_spec = property(lambda self: self.store.index_spec)  # Milvus index type and parameters

    def sources(self) -> set[str]:
        """The image source of every item (a full scan; build_index skips rows already in the collection)."""
        return self.store.sources()

    def drop(self) -> None:
        """Delete the whole collection's rows (build --no-resume on a single worker)."""
        self.store.drop()

    def delete_shard(self, shard: str) -> None:
        """Remove every row a build worker "I/N" wrote (before that worker re-runs)."""
        self.store.delete_shard(shard)

    def add_vectors(self, vectors, labels=None, sources=None, rows=None, *, _images=None, shard: str = "") -> list[int]:
        """Upsert embeddings with their metadata; ids come from rows (indexer/index/milvus.py)."""
        return self.store.add_vectors(vectors, labels, sources, rows, _images=_images, shard=shard)



def load_index(path: str | os.PathLike, embedder: "Embedder | None" = None, *, ef: int | None = None,
               verify: bool = True) -> Gallery:
    """The gallery of an index directory, on the store its meta.json records."""
    path = Path(path).absolute()
    meta = read_meta(path)
    check_embedder(path, meta["model"], meta["dim"], embedder)
    kind = (meta.get("store") or {}).get("kind", HNSW)
    gallery_class, store_class = (GalleryIndex, HnswStore) if kind == HNSW else (MilvusIndex, MilvusStore)
    gallery = gallery_class.__new__(gallery_class)  # around a loaded store, not a new one
    Gallery.__init__(gallery, store_class.load(path, meta, ef=ef, verify=verify), embedder)
    return gallery


def open_index(path: str | os.PathLike, embedder: "Embedder | None" = None, *, ef: int | None = None,
               load_model: bool = True) -> Gallery:
    """Open an index directory. Without an embedder, the model named in meta.json is loaded (shared
    instance) unless load_model=False (vector search only)."""
    if embedder is None and load_model:
        from ..models import load_embedder  # heavy (torch): only when a model is wanted

        embedder = load_embedder(read_meta(Path(path).absolute())["model"])
    return load_index(path, embedder, ef=ef)
