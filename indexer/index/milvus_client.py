"""Talking to Milvus: connections (Milvus Lite files shared within a process), collections and their index
parameters. pymilvus is optional: imported on first use, with an install hint when it is missing."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import threading
from importlib import metadata
from typing import Iterable

from ..sources import SOURCE_IDENTITY
from .store import StoreSpec
from .types import HnswParams, IndexFormatError, IndexMismatchError
from ..errors import UserInputError

INSTALL_HINT = "pip install 'twinsight[milvus]', or pip install pymilvus milvus-lite  (milvus-lite runs Milvus embedded from a local file)"
UNROWED_ID_BASE = 1 << 48  # ids of folder files and added images; dataset rows use their row number
HNSW_UP_TO = 2_000_000  # auto index: HNSW up to this many expected items, IVF_FLAT above
MAX_LABEL, MAX_SOURCE = 1024, 4096
BATCH = 1000  # rows per insert call (512-d float32: ~2 MB, far below gRPC's message limit)


def _pymilvus():
    try:
        import pymilvus  # optional (pip install twinsight[milvus]) and heavy: only when a Milvus store is used
    except ImportError:
        raise ImportError(f"The Milvus store needs pymilvus: {INSTALL_HINT}") from None
    return pymilvus


_lite_users: dict[str, int] = {}  # Milvus Lite path -> open MilvusStore objects in this process
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
        from milvus_lite.server_manager import server_manager_instance  # optional, as pymilvus

        server_manager_instance.release_server(store.uri)


def collection_name(model: str, source: dict) -> str:
    """The default collection of (model, dataset): readable prefix + digest, valid as a Milvus name."""
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
    raise UserInputError(f"Milvus index type {index_type!r}: use auto, hnsw or ivf_flat.")


def expr_strings(values: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(str(v)) for v in values) + "]"


def open_collection(client, spec: StoreSpec, dim: int, model: str, index_spec: dict, create: bool) -> dict:
    """Make sure the collection of `spec` exists (creating it with `index_spec` if `create`) and holds `dim`-d
    vectors, and load it; returns the index parameters it was built with."""
    name = spec.collection
    if not client.has_collection(name):
        if not create:
            raise IndexFormatError(f"Milvus collection {name!r} is missing at {spec.uri}: rebuild "
                                   f"with `python -m indexer build ... --store milvus:{spec.uri}`.")
        create_collection(client, spec, dim, model, index_spec)
        return index_spec
    check_dim(client, spec, dim, model)
    client.load_collection(name)  # a collection another process wrote is "released"
    return read_index_spec(client, name)


def create_collection(client, spec: StoreSpec, dim: int, model: str, index_spec: dict) -> None:
    """The gallery collection: the schema of the module docstring of milvus.py, a COSINE vector index."""
    name = spec.collection
    pymilvus = _pymilvus()
    DataType = pymilvus.DataType
    schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("row", DataType.INT64, nullable=True)
    schema.add_field("label", DataType.VARCHAR, max_length=MAX_LABEL, nullable=True)
    schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE)
    schema.add_field("shard", DataType.VARCHAR, max_length=32)
    schema.add_field("added", DataType.INT64)
    index_params = client.prepare_index_params()
    index_params.add_index(field_name="vector", index_type=index_spec["index_type"], metric_type="COSINE",
                           params=index_spec["params"])
    index_params.add_index(field_name="shard", index_type="INVERTED")
    try:
        client.create_collection(name, schema=schema, index_params=index_params,
                                 consistency_level="Session")  # a writer reads its own writes
    except pymilvus.exceptions.MilvusException:
        if not client.has_collection(name):  # else another shard worker created it first
            raise
        check_dim(client, spec, dim, model)


def check_dim(client, spec: StoreSpec, dim: int, model: str) -> None:
    fields = client.describe_collection(spec.collection)["fields"]
    theirs = next(int(f["params"]["dim"]) for f in fields if f["name"] == "vector")
    if theirs != dim:
        raise IndexMismatchError(f"Milvus collection {spec.collection!r} at {spec.uri} holds {theirs}-d vectors, "
                                 f"not {dim}-d vectors of {model}: choose another collection.")


def id_for(folder: bool, row: int | None, source: str) -> int:
    """The id of an item: its dataset row, or for folder files and added images one above UNROWED_ID_BASE."""
    if row is not None and not folder:
        return int(row)  # dataset rows are stable: the same id from any shard worker
    if row is not None and source:  # folder rows shift when files are added: key by path
        return UNROWED_ID_BASE + int.from_bytes(hashlib.sha256(source.encode()).digest()[:6], "big") % (1 << 47)
    return UNROWED_ID_BASE + secrets.randbits(47)  # added images: random, never a dataset row


def read_index_spec(client, name: str) -> dict:
    described = client.describe_index(name, "vector")
    spec = {"index_type": described["index_type"], "params": {}}
    if "nlist" in described:
        spec["params"]["nlist"] = int(described["nlist"])
        spec["nprobe"] = max(8, int(described["nlist"]) // 16)
    return spec


def milvus_versions() -> dict[str, str]:
    versions = {}
    for name in ("pymilvus", "milvus-lite"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
