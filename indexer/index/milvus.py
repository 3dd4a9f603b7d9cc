"""MilvusStore: a gallery store whose vectors and metadata live in a Milvus collection (through pymilvus).

The index directory holds meta.json (model, dim, source, and `store`: where the vectors live) and the
images users added (images/); everything per item is in the collection:

    id      INT64 primary key   dataset row r -> r; folder file / added image -> 2**48 + 47-bit hash/random
    vector  FLOAT_VECTOR(dim)   L2-normalised, COSINE metric
    row     INT64 (nullable)    dataset row
    label   VARCHAR (nullable)  label filters are Milvus expressions: label in ["a", "b"]
    source  VARCHAR             where the image is (same convention as the hnswlib store)
    shard   VARCHAR             "I/N" of the build worker that wrote it ("" for added images)
    added   INT64               microseconds since the epoch (UTC)

Ids depend only on the dataset row (or file path), so N workers embedding disjoint shards write disjoint
ids into one collection, and re-running one shard deletes `shard == "I/N"` and upserts its rows again.
Searches need no lock: Milvus serves concurrent reads and writes.
"""
from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from ..atomic import write_atomically
from ..errors import UserInputError
from .directory import library_versions, meta_header, save_target
from .milvus_client import (BATCH, MAX_LABEL, MAX_SOURCE, collection_name, connect, create_collection, disconnect,
                            expr_strings, id_for, index_params_for, milvus_versions, open_collection)
from .store import MILVUS, StoreSpec
from .types import (IMAGES_DIR, INDEX_SOURCE_PREFIX, JOURNAL_LIMIT, META_FILE, HnswParams, Item, Metric, SearchHit,
                    check_added, utcnow)

class MilvusStore:
    """The store interface (indexer/index/store.py: add_vectors, delete, search, get, labels, save, commit) on a
    Milvus collection. Not available here: Hamming mode, exact (brute force) search and tune_ef."""

    tunes_ef = False  # the search graph lives in Milvus; its ef is set with --ef

    def __init__(self, dim: int, model: str, params: HnswParams = HnswParams(), *, store: StoreSpec,
                 source: dict | None = None, path=None, index: dict | None = None, expected: int = 0,
                 create: bool = True):
        self.dim, self.model, self.params = int(dim), model, params
        self.source: dict = dict(source or {})  # where the items came from (dataset/folder), for meta.json
        self.path = Path(path) if path else None
        self.created = utcnow()
        self.extra: dict[str, Any] = {}  # free-form, saved in meta.json (build progress lives here)
        self.journal_limit = JOURNAL_LIMIT  # unused: Milvus persists each change itself
        self._pending_images: dict[int, Image.Image] = {}
        self._save_lock = threading.Lock()
        self.swap_lock = threading.Lock()  # images are replaced file by file (write_atomically): nothing to wait for
        self.spec = StoreSpec(MILVUS, store.uri, store.collection or collection_name(model, self.source))
        self.collection = self.spec.collection
        self.index_spec = dict(index or index_params_for(expected, params))
        self._client = connect(self.spec)
        self._closed = False
        self._labels_cache: list[str] | None = None
        self._cache_lock = threading.Lock()
        try:
            found = open_collection(self._client, self.spec, self.dim, self.model, self.index_spec, create)
            self.index_spec = self.index_spec if index is not None else found  # given, or the collection's own
        except BaseException:
            self.close()
            raise

    def drop(self) -> None:
        """Delete the whole collection (build --no-resume on a single worker)."""
        self._client.drop_collection(self.collection)
        create_collection(self._client, self.spec, self.dim, self.model, self.index_spec)
        self._labels_changed()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            disconnect(self._client, self.spec)

    # -- basic facts -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        result = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    def __contains__(self, item_id: int) -> bool:
        return bool(self._client.get(self.collection, ids=[int(item_id)], output_fields=["id"]))

    def __repr__(self) -> str:
        return f"MilvusStore({self.spec}, model={self.model!r}, dim={self.dim}, path={self.path})"

    def _iterate(self, fields: list[str], filter: str = "") -> Iterable[dict]:
        iterator = self._client.query_iterator(self.collection, batch_size=1000, filter=filter, output_fields=fields)
        try:
            while batch := iterator.next():
                yield from batch
        finally:
            iterator.close()

    @property
    def ids(self) -> list[int]:
        """All ids, sorted (a full scan: fine for tests and small galleries)."""
        return sorted(int(r["id"]) for r in self._iterate(["id"]))

    def sources(self) -> set[str]:
        """The image source of every item (a full scan; build_index skips rows already in the collection)."""
        return {r["source"] for r in self._iterate(["source"])}

    @property
    def capacity(self) -> int:
        return len(self)

    @property
    def ef(self) -> int:
        return self.params.ef

    @ef.setter
    def ef(self, value: int) -> None:
        self.params = HnswParams(self.params.M, self.params.ef_construction, int(value), self.params.seed)

    def get(self, item_id: int) -> Item:
        rows = self._client.get(self.collection, ids=[int(item_id)], output_fields=["row", "label", "source", "added"])
        if not rows:
            raise KeyError(f"No item with id {item_id} in Milvus collection {self.collection!r}.")
        r = rows[0]
        return Item(int(r["id"]), r["row"], r["label"], r["source"],
                    datetime.fromtimestamp(r["added"] / 1e6, timezone.utc))

    def vectors(self, ids: Sequence[int] | None = None) -> np.ndarray:
        """Stored vectors of the given ids (in that order), or of all items in `ids` order (a full scan)."""
        ids = self.ids if ids is None else [int(i) for i in ids]
        found = {}
        for start in range(0, len(ids), BATCH):
            for r in self._client.get(self.collection, ids=ids[start:start + BATCH], output_fields=["vector"]):
                found[int(r["id"])] = r["vector"]
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"No items with ids {missing[:10]} in Milvus collection {self.collection!r}.")
        return np.asarray([found[i] for i in ids], dtype=np.float32).reshape(len(ids), self.dim)

    def labels(self) -> list[str]:
        """Distinct labels, sorted. Milvus has no DISTINCT: one scan of the label field, cached until this
        process adds or deletes (other writers' new labels show after reopening)."""
        with self._cache_lock:
            if self._labels_cache is None:
                found = {r["label"] for r in self._iterate(["label"], filter="label is not null")}
                self._labels_cache = sorted(label for label in found if label is not None)
            return list(self._labels_cache)

    def _labels_changed(self) -> None:
        with self._cache_lock:
            self._labels_cache = None

    # -- updates ---------------------------------------------------------------------------------------
    def add_vectors(self, vectors: np.ndarray, labels=None, sources=None, rows=None, *, _images=None,
                    shard: str = "") -> list[int]:
        """Upsert embeddings with their metadata; ids come from rows (see the module docstring)."""
        vectors, labels, sources, rows = check_added(self.dim, self.model, vectors, labels, sources, rows)
        n = len(vectors)
        if n == 0:
            return []
        ids = [id_for(self.source.get("kind") == "folder", row, src) for row, src in zip(rows, sources)]
        for offset, image in enumerate(_images or []):
            if image is not None:  # written to the index directory's images/ on the next save
                self._pending_images[ids[offset]] = image
                sources[offset] = f"{INDEX_SOURCE_PREFIX}{IMAGES_DIR}/{ids[offset]}.png"
        added = int(datetime.now(timezone.utc).timestamp() * 1e6)
        data = [{"id": i, "vector": v, "row": None if r is None else int(r),
                 "label": None if label is None else str(label)[:MAX_LABEL], "source": str(s)[:MAX_SOURCE],
                 "shard": shard, "added": added}
                for i, v, r, label, s in zip(ids, vectors.tolist(), rows, labels, sources)]
        for start in range(0, n, BATCH):
            self._client.upsert(self.collection, data[start:start + BATCH])
        self._labels_changed()
        return ids

    def delete(self, ids: Iterable[int], missing_ok: bool = False) -> int:
        ids = list(dict.fromkeys(int(i) for i in ids))
        present = set()
        for start in range(0, len(ids), BATCH):
            present |= {int(r["id"]) for r in self._client.get(self.collection, ids=ids[start:start + BATCH],
                                                                  output_fields=["id"])}
        missing = [i for i in ids if i not in present]
        if missing and not missing_ok:
            raise KeyError(f"No items with ids {missing[:10]} in this index; nothing was deleted.")
        for start in range(0, len(ids), BATCH):
            chunk = [i for i in ids[start:start + BATCH] if i in present]
            if chunk:
                self._client.delete(self.collection, ids=chunk)
        for item_id in present:
            self._pending_images.pop(item_id, None)
        self._labels_changed()
        return len(present)

    def delete_shard(self, shard: str) -> None:
        """Remove every row a build worker "I/N" wrote (before that worker re-runs)."""
        self._client.delete(self.collection, filter=f"shard == {json.dumps(shard)}")
        self._labels_changed()

    def enable_hamming(self, kind=None, bits: int = 0):
        raise UserInputError("Hamming mode is only available on the hnswlib store (build without --store milvus:...).")

    def tune_ef(self, *args, **kwargs):
        raise UserInputError("tune_ef measures the hnswlib graph; a Milvus collection's search ef is set with --ef.")

    @property
    def hamming(self) -> None:
        return None

    def memory_bytes(self) -> dict[str, int]:
        return {"float32": len(self) * self.dim * 4, "hamming": 0}

    def pending_image(self, item_id: int) -> Image.Image | None:
        """An added image not yet written to the index directory (until the next save or commit)."""
        image = self._pending_images.get(int(item_id))
        return None if image is None else image.copy()

    # -- search ----------------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int = 10, label_filter=None, *, metric: Metric | str = Metric.COSINE,
               exact: bool | None = None, rerank: int = 500) -> list[SearchHit]:
        """The k most similar items by Milvus's index (HNSW: ef = max(ef, k); IVF: nprobe), best first.
        label_filter runs inside Milvus as `label in [...]`."""
        if Metric(metric) is not Metric.COSINE:
            raise UserInputError("Hamming search is only available on the hnswlib store.")
        if exact:
            raise UserInputError("Exact (brute force) search is not available on the Milvus store; raise ef instead.")
        q = query
        if k <= 0:
            return []
        expr = ""
        if label_filter is not None:
            wanted = [label_filter] if isinstance(label_filter, str) else list(label_filter)
            expr = f"label in {expr_strings(wanted)}"
        if self.index_spec["index_type"] == "HNSW":
            search_params = {"ef": max(self.params.ef, int(k))}
        else:
            search_params = {"nprobe": self.index_spec.get("nprobe", 16)}
        result = self._client.search(self.collection, [q.tolist()], limit=int(k), filter=expr,
                                     output_fields=["row", "label", "source"], search_params={"params": search_params})
        return [SearchHit(int(hit["id"]), float(hit["distance"]), hit["entity"]["label"], hit["entity"]["source"],
                          hit["entity"]["row"]) for hit in result[0]]

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Flush the collection, write added images to DIR/images/ and meta.json atomically (a file rename:
        safe when several shard workers write the same directory)."""
        target = save_target(path, self.path)
        (target / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        with self._save_lock:
            self._client.flush(self.collection)
            saved = list(self._pending_images.items())
            for item_id, image in saved:
                write_atomically(target / IMAGES_DIR / f"{item_id}.png", lambda staging: image.save(staging, format="PNG"))
            meta = self._meta()
            write_atomically(target / META_FILE, lambda staging: staging.write_text(json.dumps(meta, indent=2, default=str)))
            self.path = target
        for item_id, _ in saved:
            self._pending_images.pop(item_id, None)
        return target

    def commit(self, journal_limit: int | None = None) -> Path:
        """Milvus persists each change itself: a commit is a save (images and meta.json); no journal."""
        return self.save()

    def _meta(self) -> dict:
        return {
            **meta_header(self.model, self.dim, self.params, max_elements=0),
            "store": {"kind": MILVUS, "uri": self.spec.uri, "collection": self.collection, "index": self.index_spec},
            "hamming": None,
            "source": self.source,
            "count": len(self),  # at save time; the collection is the truth
            "created": self.created.isoformat(),
            "saved": datetime.now(timezone.utc).isoformat(),
            "versions": {**library_versions(), **milvus_versions()},
            "extra": self.extra,
            "files": {},
        }

    @classmethod
    def load(cls, path, meta: dict, *, ef: int | None = None, verify: bool = True) -> "MilvusStore":
        """The store of an index directory whose meta.json (read_meta) is `meta` (`verify` has nothing to check:
        the vectors are in Milvus)."""
        store = meta["store"]
        index = cls(meta["dim"], meta["model"], HnswParams.from_meta(meta["hnsw"], ef),
                    store=StoreSpec(MILVUS, store["uri"], store["collection"]), source=meta.get("source"),
                    path=Path(path).absolute(), index=store.get("index"), create=False)
        index.created = datetime.fromisoformat(meta["created"])
        index.extra = dict(meta.get("extra") or {})
        return index
