"""The append-only journal of an index directory: changes made durable without rewriting the whole index.

`HnswStore.commit()` (indexer/index/hnsw_files.py) appends one record per batch of changes to `journal.bin` and
fsyncs it; loading the index replays the records on top of the last full save; `save()` folds them in (a full save
writes a new directory, without a journal). See docs/INDEX.md.

A record is

    magic b"TSJ1" | header length (uint32 LE) | payload length (uint64 LE) | header (JSON) | payload | sha256

where the sha256 covers everything before it. The header says what the payload holds (for an addition:
ids, rows, labels, sources, times and the float32 vectors' shape); the payload is raw little-endian arrays.
No pickle.

A crash while appending leaves a torn last record: it was never acknowledged, so the reader ignores it and
the next append cuts it off. A bad record with more records after it is damage, and is reported.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..atomic import fsync_path
from ..errors import StoredIndexError

JOURNAL_FILE = "journal.bin"
MAGIC = b"TSJ1"
_PREFIX = struct.Struct("<4sIQ")  # magic, header length, payload length
_DIGEST = 32


class JournalError(StoredIndexError):
    """journal.bin is damaged before its last record (a torn last record is not an error)."""


@dataclass(frozen=True)
class Record:
    header: dict
    payload: memoryview  # a view of the file's bytes: a large journal is not copied record by record

    def array(self, key: str) -> np.ndarray:
        """The payload array the header describes under `key`: {"offset", "dtype", "shape"}."""
        spec = self.header[key]
        count = int(np.prod(spec["shape"]))
        return np.frombuffer(self.payload, dtype=np.dtype(spec["dtype"]), count=count,
                             offset=spec["offset"]).reshape(spec["shape"])


def encode(header: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """One record: `header` plus the arrays, each described in the header under its key."""
    header, parts, offset = dict(header), [], 0
    for key, array in arrays.items():
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        header[key] = {"offset": offset, "dtype": array.dtype.newbyteorder("<").str, "shape": list(array.shape)}
        parts.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, len(head), offset) + head + b"".join(parts)
    return body + hashlib.sha256(body).digest()


def read(path: Path) -> tuple[list[Record], int]:
    """The journal's complete records and the byte offset where they end (the file's size unless its last
    record is torn). A missing file is an empty journal."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records, offset = [], 0
    for record, end in _records(data):
        if record is None:  # torn or damaged at `offset`
            if end < len(data):
                raise JournalError(f"{path} is damaged at byte {offset} of {len(data)} (a record before the last "
                                   "fails its checksum): restore the index directory from a backup, or delete "
                                   f"{path.name} to open the index as of its last full save.")
            break
        records.append(record)
        offset = end
    return records, offset


def _records(data: bytes) -> Iterator[tuple[Record | None, int]]:
    """(record, end offset) for each record; (None, end of the bad record or of the data) where one is bad."""
    offset, view = 0, memoryview(data)
    while offset < len(data):
        if len(data) - offset < _PREFIX.size:
            yield None, len(data)
            return
        magic, head_size, payload_size = _PREFIX.unpack_from(data, offset)
        end = offset + _PREFIX.size + head_size + payload_size + _DIGEST
        if magic != MAGIC and any(data[offset:]):
            # An append writes the magic first, so a torn one keeps it (or leaves zeros, where a crash grew the
            # file before its data landed): a wrong magic followed by data is damage, not a torn tail.
            yield None, offset
            return
        if magic != MAGIC or end > len(data):
            yield None, len(data)  # a torn length field can point anywhere: nothing after it can be trusted
            return
        if hashlib.sha256(view[offset:end - _DIGEST]).digest() != data[end - _DIGEST:end]:
            yield None, end
            return
        start = offset + _PREFIX.size
        try:
            header = json.loads(bytes(view[start:start + head_size]))
        except ValueError:
            yield None, end
            return
        yield Record(header, view[start + head_size:end - _DIGEST]), end
        offset = end


def size(path: Path) -> int:
    """The journal's size in bytes (0 when there is none)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def append(path: Path, record: bytes, valid_end: int) -> int:
    """Append an encoded record after the first `valid_end` bytes (cutting off a torn tail), fsync it, and
    return the new end. The directory is fsynced when the file is new, so the file itself survives a crash."""
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size != valid_end:
            os.ftruncate(fd, valid_end)
        os.lseek(fd, valid_end, os.SEEK_SET)
        _write_all(fd, record)
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_path(path.parent)
    return valid_end + len(record)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

