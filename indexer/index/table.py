"""The per-item columns of the hnswlib store, aligned by position."""
from __future__ import annotations

from datetime import datetime
from typing import Iterable

import numpy as np

from ..hamming import BinaryCodec
from .scan import SCAN_DTYPE
from .types import Item, SearchHit


class ItemTable:
    """Ids, dataset rows, labels, sources and times of the items, the float16 scan copy of their vectors and, in
    Hamming mode, their binary codes: row `pos` of every column is the same item. Removal swaps the last item into
    the hole, so every column stays aligned and dense. Not locked: the store holds its lock around every call."""

    def __init__(self, dim: int):
        self.dim = dim
        self.vectors = np.zeros((0, dim), dtype=SCAN_DTYPE)  # capacity rows; the first `count` are items
        self.count = 0
        self.ids: list[int] = []
        self.rows: list[int | None] = []
        self.labels: list[str | None] = []
        self.sources: list[str] = []
        self.added: list[datetime] = []
        self.position: dict[int, int] = {}  # id -> row of every column
        self.codec: BinaryCodec | None = None
        self.codes = np.zeros((0, 1), dtype=np.uint64)

    def pos(self, item_id: int) -> int:
        try:
            return self.position[int(item_id)]
        except KeyError:
            raise KeyError(f"No item with id {item_id} in this index ({self.count} items).") from None

    def item(self, pos: int) -> Item:
        return Item(self.ids[pos], self.rows[pos], self.labels[pos], self.sources[pos], self.added[pos])

    def hit(self, pos: int, score: float) -> SearchHit:
        return SearchHit(self.ids[pos], float(score), self.labels[pos], self.sources[pos], self.rows[pos])

    def distinct_labels(self) -> list[str]:
        return sorted({label for label in self.labels if label is not None})

    def filter_positions(self, label_filter: str | Iterable[str] | None) -> np.ndarray | None:
        """Positions of the items with one of these labels (None: no filter)."""
        if label_filter is None:
            return None
        wanted = {label_filter} if isinstance(label_filter, str) else set(label_filter)
        return np.array([p for p, label in enumerate(self.labels) if label in wanted], dtype=np.int64)

    def live_vectors(self) -> np.ndarray:
        return self.vectors[: self.count]

    def live_codes(self) -> np.ndarray:
        return self.codes[: self.count]

    def reserve(self, n: int) -> None:
        """Grow the vector and code arrays (by doubling) so n more items fit."""
        if self.count + n > len(self.vectors):
            size = max(self.count + n, 2 * len(self.vectors), 64)
            grown = np.zeros((size, self.dim), dtype=SCAN_DTYPE)
            grown[: self.count] = self.vectors[: self.count]
            self.vectors = grown
            if self.codec is not None:
                codes = np.zeros((size, self.codes.shape[1]), dtype=np.uint64)
                codes[: self.count] = self.codes[: self.count]
                self.codes = codes

    def append(self, ids: list[int], vectors: np.ndarray, rows, labels, sources, added: list[datetime]) -> None:
        """Add items at the end (room reserved first)."""
        n = len(ids)
        self.reserve(n)
        start = self.count
        self.vectors[start : start + n] = vectors
        if self.codec is not None:
            self.codes[start : start + n] = self.codec.encode(vectors)
        for offset, item_id in enumerate(ids):
            self.position[item_id] = start + offset
        self.ids += ids
        self.rows += [None if r is None else int(r) for r in rows]
        self.labels += [None if label is None else str(label) for label in labels]
        self.sources += [str(s) for s in sources]
        self.added += added
        self.count += n

    def remove(self, item_id: int) -> bool:
        """Remove an item; False if there is none with this id."""
        pos = self.position.pop(item_id, None)
        if pos is None:
            return False
        last = self.count - 1
        if pos != last:  # swap-remove keeps every column aligned
            self.vectors[pos] = self.vectors[last]
            if self.codec is not None:
                self.codes[pos] = self.codes[last]
            for column in (self.ids, self.rows, self.labels, self.sources, self.added):
                column[pos] = column[last]
            self.position[self.ids[pos]] = pos
        for column in (self.ids, self.rows, self.labels, self.sources, self.added):
            column.pop()
        self.count -= 1
        return True

    def set_codec(self, codec: BinaryCodec | None) -> None:
        """Hamming mode on (codes computed for every item, and kept up to date) or off (None)."""
        self.codec = codec
        if codec is not None:
            codes = np.zeros((len(self.vectors), codec.bytes_per_code() // 8), dtype=np.uint64)
            codes[: self.count] = codec.encode(self.vectors[: self.count].astype(np.float32))
            self.codes = codes

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of the float32 vectors and of the binary codes (0 when Hamming mode is off)."""
        per_code = self.codec.bytes_per_code() if self.codec else 0
        return {"float32": self.count * self.dim * 4, "hamming": self.count * per_code}
