"""MilvusIndex: a gallery whose vectors and metadata live in a Milvus collection (through pymilvus).

The index directory holds meta.json (model, dim, source, and `store`: where the vectors live) and the
images users added (images/); everything per item is in the collection:

    id      INT64 primary key   dataset row r -> r; folder file / added image -> 2**48 + 47-bit hash/random
    vector  FLOAT_VECTOR(dim)   L2-normalised, COSINE metric
    row     INT64 (nullable)    dataset row
    label   VARCHAR (nullable)  label filters are Milvus expressions: label in ["a", "b"]
    source  VARCHAR             where the image is (same convention as GalleryIndex)
    shard   VARCHAR             "I/N" of the build worker that wrote it ("" for added images)
    added   INT64               microseconds since the epoch (UTC)

Ids depend only on the dataset row (or file path), so N workers embedding disjoint shards write disjoint
ids into one collection, and re-running one shard deletes `shard == "I/N"` and upserts its rows again.
Searches need no lock: Milvus serves concurrent reads and writes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .atomic import write_atomically
from .index import (IMAGES_DIR, INDEX_SOURCE_PREFIX, META_FILE, GalleryIndex, HnswParams, IndexFormatError,
                    IndexMismatchError, Item, Metric, SearchHit, _mismatch_message, library_versions, meta_header,
                    read_meta)
from .store import MILVUS, StoreSpec

INSTALL_HINT = "pip install 'twinsight[milvus]', or pip install pymilvus milvus-lite  (milvus-lite runs Milvus embedded from a local file)"
UNROWED_ID_BASE = 1 << 48  # ids of folder files and added images; dataset rows use their row number
HNSW_UP_TO = 2_000_000  # auto index: HNSW up to this many expected items, IVF_FLAT above
MAX_LABEL, MAX_SOURCE = 1024, 4096
BATCH = 1000  # rows per insert call (512-d float32: ~2 MB, far below gRPC's message limit)


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise ImportError(f"The Milvus store needs pymilvus: {INSTALL_HINT}") from None
    return pymilvus


_lite_users: dict[str, int] = {}  # Milvus Lite path -> open MilvusIndex objects in this process
_lite_lock = threading.Lock()


def connect(store: StoreSpec):
    """A MilvusClient for a Milvus Lite path or a server URL ($MILVUS_TOKEN: 'user:password' or an API key)."""
    pymilvus = _pymilvus()
    kwargs = {"token": os.environ["MILVUS_TOKEN"]} if os.environ.get("MILVUS_TOKEN") else {}
    try:
        client = pymilvus.MilvusClient(store.uri, **kwargs)
    except pymilvus.exceptions.MilvusException as exc:
        where = ("Milvus Lite file (one process at a time: is another build, search or app using it?)"
                 if store.is_local_file else "Milvus server")
        raise ConnectionError(f"Cannot open the {where} at {store.uri}: {exc}") from None
    if store.is_local_file:
        with _lite_lock:
            _lite_users[store.uri] = _lite_users.get(store.uri, 0) + 1
        logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_lite_has_no_mvcc_ts)
    return client


def _lite_has_no_mvcc_ts(record: logging.LogRecord) -> bool:
    """Milvus Lite has no MVCC timestamps: pymilvus warns on every scan (labels(), ids) and falls back correctly."""
    return "failed to get mvccTs" not in record.getMessage()


def disconnect(client, store: StoreSpec) -> None:
    """Close a client; the last one of a Milvus Lite file in this process also stops its embedded server, so
    that another process can open the file."""
    client.close()
    if not store.is_local_file:
        return
    with _lite_lock:
        _lite_users[store.uri] = _lite_users.get(store.uri, 1) - 1
        last = _lite_users[store.uri] <= 0
        if last:
            _lite_users.pop(store.uri, None)
    if last:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(store.uri)


def collection_name(model: str, source: dict) -> str:
    """The default collection of (model, dataset): readable prefix + digest, valid as a Milvus name."""
    from .build import SOURCE_IDENTITY

    identity = "|".join(str(source.get(key)) for key in SOURCE_IDENTITY)
    digest = hashlib.sha256(f"{model}|{identity}".encode()).hexdigest()[:12]
    return f"twinsight_{digest}"


def index_params_for(expected: int, params: HnswParams, index_type: str = "auto") -> dict:
    """Index type and build parameters that fit the expected size. HNSW (same M/efConstruction as the
    hnswlib store) up to HNSW_UP_TO items; above that IVF_FLAT with nlist ~ 4*sqrt(n) (no graph: less memory
    and a k-means build instead of a graph build), searched with nprobe = nlist/16."""
    index_type = index_type.upper()
    if index_type == "AUTO":
        index_type = "HNSW" if expected <= HNSW_UP_TO else "IVF_FLAT"
    if index_type == "HNSW":
        return {"index_type": "HNSW", "params": {"M": params.M, "efConstruction": params.ef_construction}}
    if index_type == "IVF_FLAT":
        nlist = int(min(65536, max(64, 4 * math.sqrt(max(expected, 1)))))
        return {"index_type": "IVF_FLAT", "params": {"nlist": nlist}, "nprobe": max(8, nlist // 16)}
    raise ValueError(f"Milvus index type {index_type!r}: use auto, hnsw or ivf_flat.")


def _expr_strings(values: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(str(v)) for v in values) + "]"


class MilvusIndex(GalleryIndex):
    """The GalleryIndex API (search, similar, add, add_vectors, delete, get, image, labels, save, open_index)
    on a Milvus collection. Not available here: Hamming mode, exact (brute force) search and tune_ef."""

    def __init__(self, dim: int, model: str, params: HnswParams = HnswParams(), *, store: StoreSpec,
                 embedder=None, source: dict | None = None, path=None, index: dict | None = None,
                 expected: int = 0, create: bool = True):
        super().__init__(dim, model, params, embedder=embedder, source=source, path=path, capacity=0)
        self.store = StoreSpec(MILVUS, store.uri, store.collection or collection_name(model, self.source))
        self.collection = self.store.collection
        self.index_spec = dict(index or index_params_for(expected, params))
        self._client = connect(self.store)
        self._closed = False
        self._labels_cache: list[str] | None = None
        self._cache_lock = threading.Lock()
        try:
            self._open_collection(create, index)
        except BaseException:
            self.close()
            raise

    def _open_collection(self, create: bool, index: dict | None) -> None:
        exists = self._client.has_collection(self.collection)
        if not exists and not create:
            raise IndexFormatError(f"Milvus collection {self.collection!r} is missing at {self.store.uri}: rebuild "
                                   f"with `python -m indexer build ... --store milvus:{self.store.uri}`.")
        if not exists:
            self._create_collection()
        else:
            self._check_dim()
            if index is None:  # the collection's own index decides the search parameters
                self.index_spec = self._read_index_spec()
            self._client.load_collection(self.collection)  # a collection another process wrote is "released"

    # -- collection ------------------------------------------------------------------------------------
    def _create_collection(self) -> None:
        pymilvus = _pymilvus()
        DataType = pymilvus.DataType
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("row", DataType.INT64, nullable=True)
        schema.add_field("label", DataType.VARCHAR, max_length=MAX_LABEL, nullable=True)
        schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE)
        schema.add_field("shard", DataType.VARCHAR, max_length=32)
        schema.add_field("added", DataType.INT64)
        index_params = self._client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type=self.index_spec["index_type"], metric_type="COSINE",
                               params=self.index_spec["params"])
        index_params.add_index(field_name="shard", index_type="INVERTED")
        try:
            self._client.create_collection(self.collection, schema=schema, index_params=index_params,
                                           consistency_level="Session")  # a writer reads its own writes
        except _pymilvus().exceptions.MilvusException:
            if not self._client.has_collection(self.collection):  # else another shard worker created it first
                raise
            self._check_dim()

    def _check_dim(self) -> None:
        fields = self._client.describe_collection(self.collection)["fields"]
        dim = next(int(f["params"]["dim"]) for f in fields if f["name"] == "vector")
        if dim != self.dim:
            raise IndexMismatchError(f"Milvus collection {self.collection!r} at {self.store.uri} holds {dim}-d vectors, "
                                     f"not {self.dim}-d vectors of {self.model}: choose another collection.")

    def _read_index_spec(self) -> dict:
        described = self._client.describe_index(self.collection, "vector")
        spec = {"index_type": described["index_type"], "params": {}}
        if "nlist" in described:
            spec["params"]["nlist"] = int(described["nlist"])
            spec["nprobe"] = max(8, int(described["nlist"]) // 16)
        return spec

    def drop(self) -> None:
        """Delete the whole collection (build --no-resume on a single worker)."""
        self._client.drop_collection(self.collection)
        self._create_collection()
        self._labels_changed()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            disconnect(self._client, self.store)

    # -- basic facts -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        result = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    def __contains__(self, item_id: int) -> bool:
        return bool(self._client.get(self.collection, ids=[int(item_id)], output_fields=["id"]))

    def __repr__(self) -> str:
        return f"MilvusIndex({self.store}, model={self.model!r}, dim={self.dim}, path={self.path})"

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
        vectors, labels, sources, rows = self._check_added(vectors, labels, sources, rows)
        n = len(vectors)
        if n == 0:
            return []
        ids = [self._id_for(row, src) for row, src in zip(rows, sources)]
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

    def _id_for(self, row: int | None, source: str) -> int:
        if row is not None and self.source.get("kind") != "folder":
            return int(row)  # dataset rows are stable: the same id from any shard worker
        if row is not None and source:  # folder rows shift when files are added: key by path
            return UNROWED_ID_BASE + int.from_bytes(hashlib.sha256(source.encode()).digest()[:6], "big") % (1 << 47)
        return UNROWED_ID_BASE + secrets.randbits(47)  # added images: random, never a dataset row

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
        raise ValueError("Hamming mode is only available on the hnswlib store (build without --store milvus:...).")

    def tune_ef(self, *args, **kwargs):
        raise ValueError("tune_ef measures the hnswlib graph; a Milvus collection's search ef is set with --ef.")

    def memory_bytes(self) -> dict[str, int]:
        return {"float32": len(self) * self.dim * 4, "hamming": 0}

    # -- search ----------------------------------------------------------------------------------------
    def search(self, query: Any = None, k: int = 10, label_filter=None, *, image=None, text=None, vector=None,
               metric: Metric | str = Metric.COSINE, exact: bool | None = None, rerank: int = 500) -> list[SearchHit]:
        """The k most similar items by Milvus's index (HNSW: ef = max(ef, k); IVF: nprobe), best first.
        label_filter runs inside Milvus as `label in [...]`."""
        if Metric(metric) is not Metric.COSINE:
            raise ValueError("Hamming search is only available on the hnswlib store.")
        if exact:
            raise ValueError("Exact (brute force) search is not available on the Milvus store; raise ef instead.")
        q = self.embed_query(query, image=image, text=text, vector=vector)
        if k <= 0:
            return []
        expr = ""
        if label_filter is not None:
            wanted = [label_filter] if isinstance(label_filter, str) else list(label_filter)
            expr = f"label in {_expr_strings(wanted)}"
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
        target = Path(path or self.path or "")
        if not str(target):
            raise ValueError("Where should the index go? Pass save(path).")
        target = target.absolute()
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
            "store": {"kind": MILVUS, "uri": self.store.uri, "collection": self.collection, "index": self.index_spec},
            "hamming": None,
            "source": self.source,
            "count": len(self),  # at save time; the collection is the truth
            "created": self.created.isoformat(),
            "saved": datetime.now(timezone.utc).isoformat(),
            "versions": {**library_versions(), **_milvus_versions()},
            "extra": self.extra,
            "files": {},
        }

    @classmethod
    def load(cls, path, embedder=None, *, ef: int | None = None, verify: bool = True) -> "MilvusIndex":
        path = Path(path).absolute()
        meta = read_meta(path)
        if embedder is not None and (embedder.name != meta["model"] or embedder.dim != meta["dim"]):
            raise IndexMismatchError(_mismatch_message(path, meta["model"], meta["dim"], embedder))
        store = meta["store"]
        hnsw = meta["hnsw"]
        params = HnswParams(hnsw["M"], hnsw["ef_construction"], int(ef or hnsw["ef"]), hnsw.get("seed", 100))
        index = cls(meta["dim"], meta["model"], params, store=StoreSpec(MILVUS, store["uri"], store["collection"]),
                    embedder=embedder, source=meta.get("source"), path=path, index=store.get("index"), create=False)
        index.created = datetime.fromisoformat(meta["created"])
        index.extra = dict(meta.get("extra") or {})
        return index


def _milvus_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("pymilvus", "milvus-lite"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions



def open_or_create_milvus(out: Path, embedder, described: dict, params: HnswParams, resume: bool, store: StoreSpec,
                          shard: str, expected: int, index_type: str = "auto") -> tuple[MilvusIndex, int, set | None]:
    """build_index's start on the Milvus store: (index, first row to embed, sources already embedded or None).

    A single worker resumes from the checkpoint in out/meta.json, or, with no meta.json there (an app replica
    with an empty cache, a first build on another machine), adopts what the collection holds and embeds only
    the rows missing from it. A shard worker (or --no-resume) deletes its own rows and starts over."""
    from .build import SOURCE_IDENTITY

    meta = read_meta(out) if (out / META_FILE).is_file() else None
    if meta is not None:
        theirs = meta.get("store") or {"kind": "hnsw"}
        if theirs.get("kind") != MILVUS:
            raise ValueError(f"{out} holds an hnswlib index: choose another --out for the Milvus store.")
        if (theirs["uri"], theirs["collection"]) != (store.uri, store.collection or theirs["collection"]):
            raise ValueError(f"{out} points at collection {theirs['collection']!r} at {theirs['uri']}, not at {store}: "
                             "choose another --out.")
        store = StoreSpec(MILVUS, store.uri, theirs["collection"])
        if {k: meta["source"].get(k) for k in SOURCE_IDENTITY} != {k: described.get(k) for k in SOURCE_IDENTITY}:
            raise ValueError(f"{out} holds an index of another source: choose another --out.")
        if meta["model"] != embedder.name or meta["dim"] != embedder.dim:
            raise IndexMismatchError(_mismatch_message(out, meta["model"], meta["dim"], embedder))
    index = MilvusIndex(embedder.dim, embedder.name, params, store=store, embedder=embedder, source=dict(described),
                        path=out, index=index_params_for(expected, params, index_type) if index_type != "auto" else None,
                        expected=expected)
    single = shard == "0/1"
    if meta is not None and single and resume and not (meta.get("extra") or {}).get("sharded"):
        index.created = datetime.fromisoformat(meta["created"])
        index.extra = dict(meta.get("extra") or {})
        index.source.update({k: v for k, v in meta["source"].items() if k == "next_row"})
        if described.get("kind") == "folder":  # rows shift when files are added: resume by path
            return index, 0, index.sources()
        return index, int(meta["source"].get("next_row", 0)), None
    if single and resume and len(index):  # a shard worker's next_row says nothing about the other shards
        return index, 0, index.sources()
    if not single:
        index.extra["sharded"] = shard
    index.delete_shard(shard)
    return index, 0, set()
