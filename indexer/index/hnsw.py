"""The hnswlib store: a persistent, updatable hnswlib graph with its metadata and vectors kept in step.

Index directory (see docs/INDEX.md):

    index.hnsw         hnswlib graph (cosine space; hnswlib labels are our item ids)
    vectors.npy        float16 (count, dim), L2-normalised, row-aligned with metadata.parquet (the scan copy,
                       memory-mapped once loaded: scan_copy.py)
    metadata.parquet   id, row, label, source, added
    images/            images added as PIL/bytes/arrays (files and dataset rows are referenced, not copied)
    hamming.npz        learned projection of the Hamming mode (ITQ only; sign codes need nothing)
    meta.json          model, dim, metric, hnsw params, data source, count, versions, file checksums
    journal.bin        additions and deletions committed since the last full save (indexer/index/journal.py)

Saving and committing are in hnsw_files.py (HnswFiles, one per store), the per-item columns in table.py
(ItemTable), the scan copy in scan_copy.py, searches' scans and ef tuning in scan.py.
No pickle anywhere: numpy files are written and read with allow_pickle=False.
"""
from __future__ import annotations

import os
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import hnswlib
import numpy as np
from PIL import Image

from ..hamming import BinaryCodec, CodeKind
from ..errors import UserInputError
from .hnsw_files import HnswFiles, load_hnsw
from .locks import RWLock
from .scan import choose_ef, exact_top_k, hamming_top_k
from .store import HNSW, StoreSpec
from .table import ItemTable
from .types import (DEFAULT_TARGET_RECALL, EXACT_SEARCH_BELOW, IMAGES_DIR, INDEX_SOURCE_PREFIX, JOURNAL_LIMIT,
                    MIN_CAPACITY, EfTuning, HnswParams, Item, Metric, SearchHit, check_added, utcnow)


class HnswStore:
    """Vectors + hnswlib graph + metadata of one gallery, for one model (the embedded default store).

    Thread safety: searches run concurrently; `add_vectors`, `delete` and `enable_hamming` take an exclusive lock
    (hnswlib's insertion is not safe beside queries); `save` and `commit` run beside searches.

    Persistence: `save()` writes the whole index; `commit()` makes the changes since the last save or commit
    durable by appending them to the directory's journal, and folds the journal into a full save once it
    holds `journal_limit` items (default JOURNAL_LIMIT).
    """

    spec = StoreSpec(HNSW)
    tunes_ef = True  # the graph is in this process: tune_ef can measure it

    def __init__(self, dim: int, model: str, params: HnswParams = HnswParams(), *, source: dict | None = None,
                 path: str | os.PathLike | None = None, capacity: int = MIN_CAPACITY):
        self.dim = int(dim)
        self.model = model
        self.params = params
        self.source: dict = dict(source or {})  # where the items came from (dataset/folder), for meta.json
        self.path = Path(path) if path else None
        self.created = utcnow()
        self.extra: dict[str, Any] = {}  # free-form, saved in meta.json (build progress lives here)
        self._lock = RWLock()
        self._hnsw = hnswlib.Index(space="cosine", dim=self.dim)
        self._hnsw.init_index(max_elements=max(capacity, MIN_CAPACITY), M=params.M,
                              ef_construction=params.ef_construction, random_seed=params.seed)
        self._hnsw.set_ef(params.ef)
        self._table = ItemTable(self.dim)
        self._next_id = 0
        self._pending_images: dict[int, Image.Image] = {}
        self.journal_limit = JOURNAL_LIMIT
        self._uncommitted: list[tuple[str, Sequence[int]]] = []  # ("add" | "delete", ids) since the last save/commit
        self.files = HnswFiles(self)  # save, commit and the journal's bookkeeping

    # -- basic facts ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._table.count

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) in self._table.position

    def __repr__(self) -> str:
        return f"HnswStore({len(self)} items, model={self.model!r}, dim={self.dim}, path={self.path})"

    @property
    def ids(self) -> list[int]:
        with self._lock.read():
            return self._table.ids.tolist()

    @property
    def capacity(self) -> int:
        return self._hnsw.get_max_elements()

    @property
    def ef(self) -> int:
        return self._hnsw.ef

    @ef.setter
    def ef(self, value: int) -> None:
        with self._lock.write():
            self._hnsw.set_ef(int(value))
            self.params = HnswParams(self.params.M, self.params.ef_construction, int(value), self.params.seed)

    def tune_ef(self, target_recall: float = DEFAULT_TARGET_RECALL, k: int = 10, queries: int = 200,
                seed: int = 0) -> EfTuning:
        """Raise ef to the smallest of EF_STEPS (from the current ef up) whose estimated recall@k reaches
        `target_recall`, or to the largest if none does; ef never goes down. Returns what was measured. Recall is
        estimated on `queries` probes against exact search (scan.choose_ef says how, and what it costs); searches
        running meanwhile may use a larger ef than usual."""
        if not 0 < target_recall <= 1:
            raise UserInputError(f"target_recall must be in (0, 1], got {target_recall}.")
        with self._lock.read():
            n = self._table.count
            if n <= k:
                raise UserInputError(f"tune_ef needs more than k={k} items; this index has {n}.")
            rng = np.random.default_rng(seed)
            items = self._float32(rng.choice(n, min(queries, n), replace=False))
            ef, recall, probes, tried = choose_ef(self._hnsw, self._table.position, lambda q, k: self._exact(q, k)[0], items,
                                                  self.ef, target_recall, k, rng)
            self.params = replace(self.params, ef=ef)
        return EfTuning(ef, recall, target_recall, k, probes, n, tried)

    def get(self, item_id: int) -> Item:
        with self._lock.read():
            return self._table.item(self._table.pos(item_id))

    def vectors(self, ids: Sequence[int] | None = None) -> np.ndarray:
        """The stored float32 vectors, of all items (in `ids` order) or of the given ids."""
        with self._lock.read():
            positions = range(self._table.count) if ids is None else [self._table.pos(i) for i in ids]
            return self._float32(positions)

    def _float32(self, positions: Iterable[int]) -> np.ndarray:
        """float32 vectors at these positions, from hnswlib's store (~25 us per vector: for a few)."""
        labels = self._table.ids[np.asarray(list(positions), dtype=np.int64)].tolist()
        if not labels:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._hnsw.get_items(labels), dtype=np.float32)

    def labels(self) -> list[str]:
        """Distinct labels, sorted."""
        with self._lock.read():
            return self._table.distinct_labels()

    # -- updates -------------------------------------------------------------------------------------
    def add_vectors(
        self,
        vectors: np.ndarray,
        labels: Sequence[str | None] | None = None,
        sources: Sequence[str] | None = None,
        rows: Sequence[int | None] | None = None,
        *,
        _images: Sequence[Image.Image | None] | None = None,
    ) -> list[int]:
        """Add embeddings (normalised here) with their metadata; returns the new ids. Grows capacity on demand."""
        vectors, labels, sources, rows = check_added(self.dim, self.model, vectors, labels, sources, rows)
        n = len(vectors)
        if n == 0:
            return []
        with self._lock.write():
            ids = list(range(self._next_id, self._next_id + n))
            for offset, image in enumerate(_images or []):
                if image is not None:  # kept in memory until the next save or commit writes it to images/
                    self._pending_images[ids[offset]] = image
                    sources[offset] = f"{INDEX_SOURCE_PREFIX}{IMAGES_DIR}/{ids[offset]}.png"
            self._insert(ids, vectors, rows, labels, sources, [utcnow()] * n)
            self._uncommitted.append(("add", range(ids[0], ids[-1] + 1)))  # a range: a million ids cost nothing
            return ids

    def _insert(self, ids: list[int], vectors: np.ndarray, rows, labels, sources, added: list[datetime]) -> None:
        """Add items with these ids (new or replayed from the journal). Holds the write lock."""
        needed = self._hnsw.get_current_count() + len(ids)  # deleted items keep their hnswlib slot
        if needed > self._hnsw.get_max_elements():  # grow by doubling
            self._hnsw.resize_index(max(needed, 2 * self._hnsw.get_max_elements()))
        self._hnsw.add_items(vectors, np.asarray(ids, dtype=np.int64))
        self._table.append(ids, vectors, rows, labels, sources, added)
        self._next_id = max(self._next_id, max(ids) + 1)

    def delete(self, ids: Iterable[int], missing_ok: bool = False) -> int:
        """Remove items by id without rebuilding; returns how many were removed."""
        ids = [int(i) for i in ids]
        with self._lock.write():
            missing = [i for i in ids if i not in self._table.position]
            if missing and not missing_ok:
                raise KeyError(f"No items with ids {missing[:10]} in this index; nothing was deleted.")
            removed = self._remove(ids)
            self._uncommitted.append(("delete", removed))
        return len(removed)

    def _remove(self, ids: Iterable[int]) -> list[int]:
        """Remove the items of these ids that exist; returns their ids. Holds the write lock."""
        removed = [item_id for item_id in dict.fromkeys(ids) if self._table.remove(item_id)]
        for item_id in removed:
            self._hnsw.mark_deleted(item_id)
            self._pending_images.pop(item_id, None)
        return removed

    # -- Hamming mode --------------------------------------------------------------------------------
    def enable_hamming(self, kind: CodeKind | str = CodeKind.SIGN, bits: int = 0) -> BinaryCodec:
        """Compute binary codes for every item (kept up to date by add/delete; saved in meta.json)."""
        with self._lock.write():
            codec = BinaryCodec.fit(self._table.vectors.all_rows().astype(np.float32), kind, bits)
            self._table.set_codec(codec)
            return codec

    @property
    def hamming(self) -> BinaryCodec | None:
        return self._table.codec

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of the float32 vectors and of the binary codes (0 when Hamming mode is off)."""
        return self._table.memory_bytes()

    # -- search --------------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int = 10, label_filter: str | Iterable[str] | None = None, *,
               metric: Metric | str = Metric.COSINE, exact: bool | None = None, rerank: int = 500) -> list[SearchHit]:
        """The k most similar items, best first, with cosine similarity scores.

        label_filter: a label or labels; only those items are searched (exactly, since a filtered graph
        walk misses rare labels). metric=HAMMING: popcount over binary codes, then the best `rerank`
        candidates re-ranked by cosine. exact=True: brute force over all vectors; False: the hnsw graph;
        None (default): brute force for galleries under EXACT_SEARCH_BELOW items, else the graph.
        """
        q, metric, table = query, Metric(metric), self._table
        with self._lock.read():
            if table.count == 0 or k <= 0:
                return []
            k = min(int(k), table.count)
            allowed = table.filter_positions(label_filter)
            if metric is Metric.HAMMING:
                positions, scores = self._hamming(q, k, allowed, rerank)
            elif allowed is not None or (table.count < EXACT_SEARCH_BELOW if exact is None else exact):
                positions, scores = self._exact(q, k, allowed)
            else:
                positions, scores = self._graph(q, k)
            return [table.hit(p, s) for p, s in zip(positions, scores)]

    def _exact(self, q, k, allowed=None):
        return exact_top_k(self._table.vectors, self._float32, q, k, allowed)

    def _hamming(self, q, k, allowed, rerank):
        table = self._table
        return hamming_top_k(table.codec, table.live_codes(), table.vectors, self._float32, q, k, allowed, rerank)

    def _graph(self, q, k):
        try:
            labels, distances = self._hnsw.knn_query(q, k=k, num_threads=1)
        except RuntimeError:  # too few reachable non-deleted neighbours (many deletions): answer exactly
            return self._exact(q, k)
        return self._table.position.of(labels[0]), 1.0 - distances[0]

    # -- images added with the index, persistence -------------------------------------------------------
    def pending_image(self, item_id: int) -> Image.Image | None:
        """An added image not yet written to the index directory (kept in memory until the next save or commit)."""
        image = self._pending_images.get(int(item_id))
        return None if image is None else image.copy()

    @property
    def swap_lock(self) -> threading.Lock:
        """Held while a save swaps the index directory in (a reader of images/ waits on it)."""
        return self.files.swap_lock

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the whole index atomically to `path` (default: where it was loaded from or last saved), with
        the journal folded in."""
        return self.files.save(path)

    def commit(self, journal_limit: int | None = None) -> Path:
        """Make the changes since the last save or commit durable (HnswFiles.commit: a journal append, or now and
        then a full save). Returns the index directory."""
        return self.files.commit(journal_limit)

    @classmethod
    def load(cls, path: str | os.PathLike, meta: dict, *, ef: int | None = None, verify: bool = True) -> "HnswStore":
        """The store of an index directory whose meta.json (read_meta) is `meta`; see hnsw_files.load_hnsw."""
        return load_hnsw(cls, Path(path), meta, ef=ef, verify=verify)

    def close(self) -> None:
        """Release the store (nothing to do for hnswlib)."""
