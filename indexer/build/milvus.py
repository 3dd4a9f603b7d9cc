"""build_index's start on the Milvus store: resume a checkpoint, adopt what a shared collection holds, or start a
build worker's shard over."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..index import META_FILE, MILVUS, HnswParams, IndexMismatchError, MilvusIndex, StoreSpec, read_meta
from ..index.milvus_client import index_params_for
from ..index.types import mismatch_message
from ..sources import SOURCE_IDENTITY
from ..errors import UserInputError


def open_or_create_milvus(out: Path, embedder, described: dict, params: HnswParams, resume: bool, store: StoreSpec,
                          shard: str, expected: int, index_type: str = "auto") -> tuple[MilvusIndex, int, set | None]:
    """build_index's start on the Milvus store: (index, first row to embed, sources already embedded or None).

    A single worker resumes from the checkpoint in out/meta.json, or, with no meta.json there (an app replica
    with an empty cache, a first build on another machine), adopts what the collection holds and embeds only
    the rows missing from it. A shard worker (or --no-resume) deletes its own rows and starts over."""
    meta = read_meta(out) if (out / META_FILE).is_file() else None
    if meta is not None:
        theirs = meta.get("store") or {"kind": "hnsw"}
        if theirs.get("kind") != MILVUS:
            raise UserInputError(f"{out} holds an hnswlib index: choose another --out for the Milvus store.")
        if (theirs["uri"], theirs["collection"]) != (store.uri, store.collection or theirs["collection"]):
            raise UserInputError(f"{out} points at collection {theirs['collection']!r} at {theirs['uri']}, not at {store}: "
                             "choose another --out.")
        store = StoreSpec(MILVUS, store.uri, theirs["collection"])
        if {k: meta["source"].get(k) for k in SOURCE_IDENTITY} != {k: described.get(k) for k in SOURCE_IDENTITY}:
            raise UserInputError(f"{out} holds an index of another source: choose another --out.")
        if meta["model"] != embedder.name or meta["dim"] != embedder.dim:
            raise IndexMismatchError(mismatch_message(out, meta["model"], meta["dim"], embedder))
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
