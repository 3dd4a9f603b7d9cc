"""Saving, committing and loading the hnswlib store (HnswStore) in its index directory.

A full save writes a sibling temp directory and renames it into place (directory.py), so a crash mid-save leaves the
previous index loadable. Committing appends the changes since the last save or commit to journal.bin instead (the
app commits after every addition: a few KB fsynced instead of the whole index rewritten); loading replays it.
No pickle anywhere: numpy files are written and read with allow_pickle=False.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Sequence

import hnswlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import fsync_path, write_atomically
from ..hamming import BinaryCodec, CodeKind
from ..config import settings
from ..errors import UserInputError
from . import directory, journal
from .journal import JOURNAL_FILE
from .types import (HAMMING_FILE, HNSW_FILE, IMAGES_DIR, INDEX_SOURCE_PREFIX, META_FILE, METADATA_FILE, VECTORS_FILE,
                    HnswParams, IndexFormatError, utcnow)

log = logging.getLogger(__name__)


class HnswFiles:
    """The index directory of one HnswStore: full saves, journal commits, and what the journal extends.

    Thread safety: one save or commit at a time (and one writer process at a time, by a lock file); both run
    beside searches, holding the store's read lock only while they take its state.
    """

    def __init__(self, store):  # the HnswStore (not imported: hnsw.py imports this module)
        self.store = store
        self._save_lock = threading.Lock()
        self.swap_lock = threading.Lock()  # held while save() swaps the directory in (image() waits on it)
        self._base: str | None = None  # meta.json checksum of the full save at store.path (what the journal extends)
        self._base_state: tuple | None = None  # _saved_state() as of that save
        self._meta_written: str | None = None  # _journal_meta() as of that save or the last journal record
        self._journal_end = 0  # bytes of complete records in the journal
        self._journal_seen = 0  # the journal's size when this object last read or wrote it (another writer's grows it)
        self._journaled = 0  # items added or deleted through the journal since the full save

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the whole index atomically to `path` (default: where it was loaded from or last saved), with
        the journal folded in."""
        target = directory.save_target(path, self.store.path)
        with self._save_lock, directory.writer_lock(target):
            return self._save(target)

    def _save(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        directory.remove_stale_temps(target)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        taken: list[tuple[str, Sequence[int]]] = []
        try:
            with self.store._lock.read():  # the state as of one moment: additions and deletions wait meanwhile
                meta = self._write_state(tmp)
                taken, self.store._uncommitted = self.store._uncommitted, []
                saved = set(self.store._pending_images)
                state, written = self._saved_state(), self._journal_meta()
            # Checksums and fsyncs read the files only, so changes go on meanwhile (the next commit or save
            # records them): about a second of a 100k x 1280-d save that additions no longer wait for.
            base = directory.seal(tmp, meta)
            with self.swap_lock:
                directory.replace_dir(tmp, target)
            with self.store._lock.write():
                if not self.store._uncommitted and not _scan_copy_in_memory():  # the saved rows are the live ones
                    self.store._table.vectors.map(target / VECTORS_FILE)  # the scan copy leaves memory
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if taken:
                with self.store._lock.write():
                    self.store._uncommitted[:0] = taken  # not saved after all: still to be committed
            raise
        self.store.path = target
        self._base, self._base_state, self._meta_written = base, state, written
        self._journal_end = self._journal_seen = self._journaled = 0
        for item_id in saved:
            self.store._pending_images.pop(item_id, None)
        return target

    def commit(self, journal_limit: int | None = None) -> Path:
        """Make the changes since the last save or commit durable, at the cost of those changes: the added and
        deleted items, and `source` and `extra` if they changed, are appended to the index directory's journal
        and fsynced. When the journal would pass `journal_limit` items (default: the index's `journal_limit`),
        or when something the journal does not record changed (ef, Hamming codes), this is a full save()
        instead. Returns the index directory."""
        if self.store.path is None:
            raise UserInputError("This index was never saved: save(path) it once, then commit() changes.")
        limit = self.store.journal_limit if journal_limit is None else journal_limit
        with self._save_lock, directory.writer_lock(self.store.path):
            with self.store._lock.read():
                added = [i for op, ids in self.store._uncommitted if op == "add" for i in ids if i in self.store._table.position]
                deleted = [i for op, ids in self.store._uncommitted if op == "delete" for i in ids]
                meta, same_base = self._journal_meta(), self._saved_state() == self._base_state
                if not added and not deleted and meta == self._meta_written and same_base:
                    return self.store.path
                if self._base is not None and same_base and self._journaled + len(added) + len(deleted) <= limit:
                    if not self._written_by_another():
                        self._append_journal(added, deleted, meta)
                        return self.store.path
                    # Records on top of another writer's state would make the directory unloadable. This
                    # process's view is saved over it instead, as saves always did (last writer wins).
                    log.warning("%s was saved or committed by another process since this one opened it; writing "
                                "this process's index over it (re-run `python -m indexer build` to re-add dataset "
                                "rows the other process embedded)", self.store.path)
            return self._save(self.store.path)

    def _written_by_another(self) -> bool:
        """Did another process save this directory, or append to its journal, since we last read or wrote it?"""
        try:
            on_disk = json.loads((self.store.path / META_FILE).read_text()).get("checksum")
            journal_size = journal.size(self.store.path / JOURNAL_FILE)
        except (OSError, ValueError):
            return True
        return on_disk != self._base or journal_size != self._journal_seen

    def _append_journal(self, added: list[int], deleted: list[int], meta: str) -> None:
        """One journal record for these changes; images first, so an acknowledged record's images exist."""
        table = self.store._table
        positions = [table.position[i] for i in added]
        columns = table.columns(positions)
        stored = {i: self.store._pending_images[i] for i in added if i in self.store._pending_images}
        digests, images = {}, self.store.path / IMAGES_DIR
        if stored and not images.is_dir():
            images.mkdir()
            fsync_path(self.store.path)
        for item_id, image in stored.items():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            file = images / f"{item_id}.png"
            write_atomically(file, lambda staging: staging.write_bytes(buffer.getvalue()))
            fsync_path(file)
            digests[str(item_id)] = hashlib.sha256(buffer.getvalue()).hexdigest()
        if stored:
            fsync_path(images)
        header = {
            "base": self._base, "next_id": self.store._next_id, "deleted": deleted, "images": digests,
            **columns, "added": [t.isoformat() for t in columns["added"]],
        }
        if meta != self._meta_written:
            header["meta"] = json.loads(meta)
        record = journal.encode(header, {"ids": np.asarray(added, dtype=np.int64), "vectors": self.store._float32(positions)})
        self._journal_end = self._journal_seen = journal.append(self.store.path / JOURNAL_FILE, record, self._journal_end)
        self._journaled += len(added) + len(deleted)
        self.store._uncommitted.clear()
        self._meta_written = meta
        for item_id in stored:
            self.store._pending_images.pop(item_id, None)  # image() now reads the file

    def _saved_state(self) -> tuple:
        """What a full save records that the journal does not."""
        return self.store.params, self.store._table.codec, self.store.created

    def _journal_meta(self) -> str:
        """The meta.json fields a journal record carries when they changed (a build's progress lives here)."""
        return json.dumps({"source": self.store.source, "extra": self.store.extra}, sort_keys=True, default=str)

    def _replay_journal(self, verify: bool) -> None:
        """Apply the journal's records on top of the loaded full save."""
        file = self.store.path / JOURNAL_FILE
        try:
            records, self._journal_end = journal.read(file)
        except journal.JournalError as exc:
            raise IndexFormatError(str(exc)) from None
        self._journal_seen = journal.size(file)
        if self._journal_end < self._journal_seen:
            log.warning("%s: ignoring a torn last record (a commit interrupted before it was acknowledged)", file)
        columns: dict[str, list] = {"ids": [], "vectors": [], "rows": [], "labels": [], "sources": [], "added": []}
        deleted: list[int] = []
        for record in records:
            header = record.header
            if header["base"] != self._base:
                raise IndexFormatError(f"{file} continues another save of this index (not the one in {self.store.path}): "
                                       f"delete {file.name} to open the index as of its last full save.")
            for item_id, digest in header["images"].items():
                image = self.store.path / IMAGES_DIR / f"{item_id}.png"
                if verify and (not image.is_file() or directory.sha256_file(image) != digest):
                    raise IndexFormatError(f"{image} is missing or damaged (checksum mismatch): restore the index "
                                           "directory, or rebuild it.")
            columns["ids"] += [int(i) for i in record.array("ids")]
            columns["vectors"].append(record.array("vectors"))
            for key in ("rows", "labels", "sources"):
                columns[key] += header[key]
            columns["added"] += [datetime.fromisoformat(t) for t in header["added"]]
            deleted += header["deleted"]
            if "meta" in header:
                self.store.source, self.store.extra = dict(header["meta"]["source"]), dict(header["meta"]["extra"])
            self.store._next_id = max(self.store._next_id, int(header["next_id"]))
        # All additions in one insert (hnswlib spreads a batch over the cores), then all deletions: ids are never
        # reused, so this ends in the same items as replaying record by record.
        if columns["ids"]:
            self.store._insert(columns["ids"], np.concatenate(columns["vectors"]), columns["rows"], columns["labels"],
                         columns["sources"], columns["added"])
        self.store._remove(deleted)
        self._journaled = len(columns["ids"]) + len(deleted)

    def _write_state(self, tmp: Path) -> dict:
        """Write the data files into `tmp`; returns meta.json's content but for the files' checksums. Holds the
        read lock."""
        table = self.store._table
        n = table.count
        self.store._hnsw.save_index(str(tmp / HNSW_FILE))
        table.vectors.save(tmp / VECTORS_FILE)
        pq.write_table(table.arrow(), tmp / METADATA_FILE)
        self._write_images(tmp)
        if table.codec is not None and table.codec.kind is CodeKind.ITQ:
            np.savez(tmp / HAMMING_FILE, mean=table.codec.mean, projection=table.codec.projection)
        return {
            **directory.meta_header(self.store.model, self.store.dim, self.store.params, self.store._hnsw.get_max_elements()),
            "hamming": table.codec.to_dict() if table.codec else None,
            "source": json.loads(json.dumps(self.store.source, default=str)),  # copies: they may change once unlocked
            "count": n,
            "next_id": self.store._next_id,
            "created": self.store.created.isoformat(),
            "saved": utcnow().isoformat(),
            "versions": directory.library_versions(),
            "extra": json.loads(json.dumps(self.store.extra, default=str)),
        }

    def _write_images(self, tmp: Path) -> None:
        table = self.store._table
        prefix = f"{INDEX_SOURCE_PREFIX}{IMAGES_DIR}/"
        for item_id, source in zip(table.ids, table.sources):
            if not source.startswith(prefix):
                continue
            dest = tmp / source[len(INDEX_SOURCE_PREFIX):]
            dest.parent.mkdir(exist_ok=True)
            if item_id in self.store._pending_images:
                self.store._pending_images[item_id].save(dest, format="PNG")
            elif self.store.path is not None and (self.store.path / dest.relative_to(tmp)).is_file():
                old = self.store.path / dest.relative_to(tmp)
                try:
                    os.link(old, dest)
                except OSError:
                    shutil.copy2(old, dest)


def _scan_copy_in_memory() -> bool:
    """TWINSIGHT_SCAN_COPY: auto maps the saved copy, except on Windows, where a mapped file blocks the next save."""
    choice = settings().scan_copy
    return choice == "memory" or (choice == "auto" and os.name == "nt")


def load_hnsw(cls: type, path: Path, meta: dict, *, ef: int | None = None, verify: bool = True):
    """The HnswStore (of class `cls`) of the index directory `path`, whose meta.json is `meta`, with its journal
    replayed. verify: check every file against the checksums meta.json records."""
    path = path.absolute()
    if verify:
        for name, digest in meta["files"].items():
            file = path / name
            if not file.is_file() or directory.sha256_file(file) != digest:
                raise IndexFormatError(f"{file} is missing or damaged (checksum mismatch): rebuild the index "
                                       f"with `python -m indexer build ... --out {path}`.")
    hnsw_meta = meta["hnsw"]
    params = HnswParams.from_meta(hnsw_meta, ef)
    index = cls(meta["dim"], meta["model"], params, source=meta.get("source"), path=path)
    index.created = datetime.fromisoformat(meta["created"])
    index.extra = dict(meta.get("extra") or {})
    index._hnsw = hnswlib.Index(space="cosine", dim=index.dim)
    name = HNSW_FILE
    try:
        index._hnsw.load_index(str(path / name), max_elements=hnsw_meta["max_elements"])
        name = METADATA_FILE
        # ParquetFile.read, not read_table: the dataset reader behind read_table left ~0.3x the vectors' size
        # in Arrow's memory pool after a 100k-item load (benchmarks/index_memory.py); the pool's unused memory
        # is handed back once the columns are copied out.
        metadata = pq.ParquetFile(path / name).read(use_threads=False)
        name = VECTORS_FILE
        index._table.load(metadata, path / name, in_memory=_scan_copy_in_memory())
        del metadata
        pa.default_memory_pool().release_unused()
    except (OSError, ValueError, RuntimeError, pa.ArrowException) as exc:  # unverified and damaged
        raise IndexFormatError(f"{path / name} is missing or damaged ({type(exc).__name__}: {exc}); rebuild the "
                               f"index with `python -m indexer build ... --out {path}`.") from None
    index._hnsw.set_ef(params.ef)  # ef is not stored in the hnswlib file
    table = index._table
    if len(table.vectors) != table.count:
        raise IndexFormatError(f"{path}: vectors ({len(table.vectors)}) and metadata ({table.count}) disagree; "
                               "rebuild the index.")
    if table.count != meta["count"]:
        raise IndexFormatError(f"{path}: {table.count} items where meta.json says {meta['count']}; rebuild the index.")
    index._next_id = int(meta["next_id"])
    if meta.get("hamming"):
        kind = CodeKind(meta["hamming"]["kind"])
        codec = BinaryCodec(kind, int(meta["hamming"]["bits"]))
        if kind is CodeKind.ITQ:
            with np.load(path / HAMMING_FILE, allow_pickle=False) as data:
                codec.mean, codec.projection = data["mean"], data["projection"]
        table.set_codec(codec)
    files = index.files
    files._base, files._base_state = meta["checksum"], files._saved_state()
    files._replay_journal(verify)
    files._meta_written = files._journal_meta()
    return index
