"""Where a gallery's vectors live: the VectorStore interface and the `--store` spec.

Two implementations share one interface, and a gallery (indexer/index/gallery.py) composes either one:

- `HnswStore` (indexer/index/hnsw.py): hnswlib + numpy + parquet in the index directory. The embedded default.
- `MilvusStore` (indexer/index/milvus.py): vectors and metadata in a Milvus collection (Milvus Lite file,
  or a Milvus standalone/cluster at http://host:19530); the index directory keeps only meta.json (where the
  vectors live) and images added by users.

Both are opened the same way, `open_index(DIR)`, because meta.json records the store.

Store specs (`python -m indexer build --store ...`, `python app.py --store ...`, $TWINSIGHT_STORE):

    hnsw                                  the default
    milvus:PATH.db                        Milvus Lite, embedded, a local directory (one process at a time)
    milvus:http://HOST:19530              Milvus standalone or cluster ($MILVUS_TOKEN for auth)
    milvus:URI#COLLECTION                 an explicit collection name (default: derived from model + dataset)
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from ..config import settings
from ..errors import UserInputError

STORE_ENV = "TWINSIGHT_STORE"
HNSW, MILVUS = "hnsw", "milvus"
REMOTE_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


@runtime_checkable
class VectorStore(Protocol):
    """What a gallery needs from the store that holds its vectors (count is `len(store)`).

    Both stores also keep the index's meta.json fields (`params`, `source`, `extra`, `created`, `path`), and give
    back images added with the index (`pending_image` until saved; files under path/images/ after, read under
    `swap_lock`). `spec` says where the vectors live; `tunes_ef` whether `tune_ef` can measure the search graph in
    this process (hnswlib) or refuses (Milvus: its ef is set with --ef).
    """

    dim: int
    model: str
    spec: "StoreSpec"
    tunes_ef: bool

    def __len__(self) -> int: ...

    def add_vectors(self, vectors: np.ndarray, labels: Sequence[str | None] | None = None,
                    sources: Sequence[str] | None = None, rows: Sequence[int | None] | None = None) -> list[int]: ...

    def delete(self, ids: Iterable[int], missing_ok: bool = False) -> int: ...

    def search(self, query=None, k: int = 10, label_filter=None, **options) -> list: ...  # -> list[SearchHit]

    def get(self, item_id: int): ...  # -> Item (id, row, label, source, added)

    def labels(self) -> list[str]: ...

    def save(self, path: str | os.PathLike | None = None) -> Path: ...

    def commit(self, journal_limit: int | None = None) -> Path: ...  # the changes since the last save made durable, cheaply where the store can

    def close(self) -> None: ...


@dataclass(frozen=True)
class StoreSpec:
    kind: str = HNSW
    uri: str | None = None  # milvus: absolute local path (Milvus Lite) or server URL
    collection: str | None = None  # milvus: None = derived from model and dataset

    @property
    def is_local_file(self) -> bool:
        return self.kind == MILVUS and not str(self.uri).startswith(REMOTE_SCHEMES)

    def __str__(self) -> str:
        if self.kind == HNSW:
            return HNSW
        return f"{MILVUS}:{self.uri}" + (f"#{self.collection}" if self.collection else "")


def parse_store(spec: "str | StoreSpec | None") -> StoreSpec:
    """'hnsw' | 'milvus:URI[#COLLECTION]' (None or '' -> $TWINSIGHT_STORE, else hnsw)."""
    if isinstance(spec, StoreSpec):
        return spec
    spec = (spec if spec else settings().store or "").strip()
    if not spec or spec == HNSW:
        return StoreSpec()
    kind, _, rest = spec.partition(":")
    if kind != MILVUS or not rest:
        raise UserInputError(f"Unknown store {spec!r}: use 'hnsw', 'milvus:PATH' (Milvus Lite) or "
                         "'milvus:http://HOST:19530' (optionally '#COLLECTION').")
    uri, _, collection = rest.partition("#")
    if collection and not _COLLECTION_NAME.match(collection):
        raise UserInputError(f"Milvus collection name {collection!r}: letters, digits and underscores, "
                         "not starting with a digit.")
    if not uri.startswith(REMOTE_SCHEMES):
        if not uri.endswith(".db"):  # pymilvus runs Milvus Lite only for paths ending in .db
            raise UserInputError(f"Milvus Lite paths end in .db (got {uri!r}); servers are http://HOST:19530.")
        uri = str(Path(uri).expanduser().absolute())  # meta.json must work from any working directory
    return StoreSpec(MILVUS, uri, collection or None)
