"""The per-item columns of the hnswlib store, aligned by position.

The columns are numpy arrays rather than lists of Python objects: at 100k items, lists of ints, datetimes and
per-row label strings, and a dict from id to position, cost ~340 bytes an item (0.17x the raw float32 vectors of a
512-d model); arrays cost ~30 bytes plus the source strings (docs/BENCHMARKS.md, section 10).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..hamming import BinaryCodec
from .scan_copy import ScanCopy
from .types import Item, SearchHit

NO_ROW = -1  # rows[pos] of an item that is not a dataset row
NO_LABEL = -1  # label code of an unlabelled item
_UTC = timezone.utc


class Positions:
    """Item id -> position, an array indexed by id (ids are dense and never reused: 4 bytes an id ever given, where
    a dict took ~100 a live item). Unknown ids, negative or huge ones included, are simply not in it."""

    def __init__(self) -> None:
        self._at = np.zeros(0, dtype=np.int32)  # _at[id] = position + 1; 0 = no such item

    def __contains__(self, item_id: object) -> bool:
        try:
            i = int(item_id)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False
        return 0 <= i < len(self._at) and self._at[i] > 0

    def __getitem__(self, item_id: int) -> int:
        if item_id not in self:
            raise KeyError(item_id)
        return int(self._at[int(item_id)]) - 1

    def __len__(self) -> int:
        return int(np.count_nonzero(self._at))

    def of(self, ids: np.ndarray) -> np.ndarray:
        """Positions of these ids, all of them present (hnswlib's answers)."""
        return self._at[np.asarray(ids, dtype=np.int64)].astype(np.int64) - 1

    def set(self, ids: np.ndarray, positions: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and ids.max() >= len(self._at):
            grown = np.zeros(max(int(ids.max()) + 1, 2 * len(self._at)), dtype=np.int32)
            grown[: len(self._at)] = self._at
            self._at = grown
        self._at[ids] = np.asarray(positions) + 1

    def pop(self, item_id: int, default: int | None = None) -> int | None:
        if item_id not in self:
            return default
        pos = self[item_id]
        self._at[int(item_id)] = 0
        return pos


def _grown(column: np.ndarray, size: int, fill) -> np.ndarray:
    grown = np.full(size, fill, dtype=column.dtype)
    grown[: len(column)] = column
    return grown


class ItemTable:
    """Ids, dataset rows, labels, sources and times of the items, the float16 scan copy of their vectors and, in
    Hamming mode, their binary codes: row `pos` of every column is the same item. Removal swaps the last item into
    the hole, so every column stays aligned and dense. Not locked: the store holds its lock around every call."""

    def __init__(self, dim: int):
        self.dim = dim
        self.vectors = ScanCopy(dim)
        self.count = 0
        # Numpy columns with room for more (their first `count` entries are items), then the sources (a list:
        # strings of any length).
        self._ids = np.zeros(0, dtype=np.int64)
        self._rows = np.zeros(0, dtype=np.int64)
        self._labels = np.zeros(0, dtype=np.int32)  # codes into label_names
        self._added = np.zeros(0, dtype="datetime64[us]")
        self.sources: list[str] = []
        self.label_names: list[str] = []
        self._label_code: dict[str, int] = {}
        self.position = Positions()
        self.codec: BinaryCodec | None = None
        self.codes = np.zeros((0, 1), dtype=np.uint64)

    # -- reading -----------------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self.count]

    def pos(self, item_id: int) -> int:
        try:
            return self.position[int(item_id)]
        except (KeyError, TypeError, ValueError):
            raise KeyError(f"No item with id {item_id} in this index ({self.count} items).") from None

    def row(self, pos: int) -> int | None:
        return None if self._rows[pos] == NO_ROW else int(self._rows[pos])

    def label(self, pos: int) -> str | None:
        return None if self._labels[pos] == NO_LABEL else self.label_names[self._labels[pos]]

    def added(self, pos: int) -> datetime:
        return self._added[pos].astype(datetime).replace(tzinfo=_UTC)

    def item(self, pos: int) -> Item:
        return Item(int(self._ids[pos]), self.row(pos), self.label(pos), self.sources[pos], self.added(pos))

    def hit(self, pos: int, score: float) -> SearchHit:
        return SearchHit(int(self._ids[pos]), float(score), self.label(pos), self.sources[pos], self.row(pos))

    def columns(self, positions: Sequence[int]) -> dict[str, list]:
        """rows, labels, sources and added (datetimes) of these positions, as lists (a journal record's header)."""
        return {"rows": [self.row(p) for p in positions], "labels": [self.label(p) for p in positions],
                "sources": [self.sources[p] for p in positions], "added": [self.added(p) for p in positions]}

    def distinct_labels(self) -> list[str]:
        used = np.unique(self._labels[: self.count])
        return sorted(self.label_names[code] for code in used if code != NO_LABEL)

    def filter_positions(self, label_filter: str | Iterable[str] | None) -> np.ndarray | None:
        """Positions of the items with one of these labels (None: no filter)."""
        if label_filter is None:
            return None
        wanted = {label_filter} if isinstance(label_filter, str) else set(label_filter)
        codes = [self._label_code[label] for label in wanted if label in self._label_code]
        return np.flatnonzero(np.isin(self._labels[: self.count], codes)).astype(np.int64)

    def live_codes(self) -> np.ndarray:
        return self.codes[: self.count]

    # -- changes -----------------------------------------------------------------------------------
    def _code(self, label: str | None) -> int:
        if label is None:
            return NO_LABEL
        label = str(label)
        if label not in self._label_code:
            self._label_code[label] = len(self.label_names)
            self.label_names.append(label)
        return self._label_code[label]

    def reserve(self, n: int) -> None:
        """Grow the columns and codes (by doubling) so n more items fit."""
        if self.count + n > len(self._ids):
            size = max(self.count + n, 2 * len(self._ids), 64)
            self._ids, self._rows = _grown(self._ids, size, 0), _grown(self._rows, size, NO_ROW)
            self._labels, self._added = _grown(self._labels, size, NO_LABEL), _grown(self._added, size, 0)
            if self.codec is not None:
                codes = np.zeros((size, self.codes.shape[1]), dtype=np.uint64)
                codes[: self.count] = self.codes[: self.count]
                self.codes = codes

    def append(self, ids: Sequence[int], vectors: np.ndarray, rows, labels, sources, added: Sequence[datetime]) -> None:
        """Add items at the end (room reserved first)."""
        n = len(ids)
        self.reserve(n)
        start, end = self.count, self.count + n
        self.vectors.append(vectors)
        if self.codec is not None:
            self.codes[start:end] = self.codec.encode(vectors)
        self._ids[start:end] = ids
        self._rows[start:end] = [NO_ROW if r is None else int(r) for r in rows]
        self._labels[start:end] = [self._code(label) for label in labels]
        self._added[start:end] = [np.datetime64(t.astimezone(_UTC).replace(tzinfo=None), "us") for t in added]
        self.sources += [str(s) for s in sources]
        self.position.set(self._ids[start:end], np.arange(start, end))
        self.count = end

    def remove(self, item_id: int) -> bool:
        """Remove an item; False if there is none with this id."""
        pos = self.position.pop(item_id)
        if pos is None:
            return False
        last = self.count - 1
        if pos != last:  # swap-remove keeps every column aligned
            self.vectors.move(last, pos)
            if self.codec is not None:
                self.codes[pos] = self.codes[last]
            for column in (self._ids, self._rows, self._labels, self._added):
                column[pos] = column[last]
            self.sources[pos] = self.sources[last]
            self.position.set(self._ids[pos : pos + 1], [pos])
        self.vectors.pop()
        self.sources.pop()
        self.count -= 1
        return True

    def load(self, metadata: pa.Table, vectors_file: Path, in_memory: bool) -> None:
        """Fill an empty table from a saved index: metadata.parquet (id, row, label, source, added) and the scan
        copy mapped from its vectors.npy (read into memory instead if `in_memory`)."""
        self.vectors.map(vectors_file, in_memory)
        n = metadata.num_rows  # the caller checks that len(self.vectors) matches
        self.reserve(n)
        self._ids[:n] = metadata.column("id").to_numpy()
        self._rows[:n] = metadata.column("row").fill_null(NO_ROW).to_numpy()
        labels = pc.dictionary_encode(metadata.column("label").combine_chunks())
        self.label_names = [str(name) for name in labels.dictionary.to_pylist()]
        self._label_code = {name: code for code, name in enumerate(self.label_names)}
        self._labels[:n] = labels.indices.fill_null(NO_LABEL).to_numpy()
        self._added[:n] = metadata.column("added").cast(pa.timestamp("us")).to_numpy()
        self.sources = metadata.column("source").to_pylist()
        self.position.set(self._ids[:n], np.arange(n))
        self.count = n

    def arrow(self) -> pa.Table:
        """The columns as metadata.parquet holds them."""
        names = np.array(self.label_names + [None], dtype=object)  # NO_LABEL (-1) picks the None
        rows = self._rows[: self.count]
        return pa.table({
            "id": pa.array(self.ids, pa.int64()),
            "row": pa.array(rows, pa.int64(), mask=rows == NO_ROW),
            "label": pa.array(names[self._labels[: self.count]], pa.string()),
            "source": pa.array(self.sources, pa.string()),
            "added": pa.array(self._added[: self.count]).cast(pa.timestamp("us", tz="UTC")),
        })

    def set_codec(self, codec: BinaryCodec | None) -> None:
        """Hamming mode on (codes computed for every item, and kept up to date) or off (None)."""
        self.codec = codec
        if codec is not None:
            codes = np.zeros((len(self._ids), codec.bytes_per_code() // 8), dtype=np.uint64)
            codes[: self.count] = codec.encode(self.vectors.all_rows().astype(np.float32))
            self.codes = codes

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of the float32 vectors and of the binary codes (0 when Hamming mode is off)."""
        per_code = self.codec.bytes_per_code() if self.codec else 0
        return {"float32": self.count * self.dim * 4, "hamming": self.count * per_code}
