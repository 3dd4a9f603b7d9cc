"""GalleryIndex: a persistent, updatable hnswlib gallery with its metadata and vectors kept in step.

Index directory (see docs/INDEX.md):

    index.hnsw         hnswlib graph (cosine space; hnswlib labels are our item ids)
    vectors.npy        float16 (count, dim), L2-normalised, row-aligned with metadata.parquet (the scan copy)
    metadata.parquet   id, row, label, source, added
    images/            images added as PIL/bytes/arrays (files and dataset rows are referenced, not copied)
    hamming.npz        learned projection of the Hamming mode (ITQ only; sign codes need nothing)
    meta.json          model, dim, metric, hnsw params, data source, count, versions, file checksums
    journal.bin        additions and deletions committed since the last full save (indexer/journal.py)

Saving writes a sibling temp directory and renames it into place, so a crash mid-save leaves the previous
index loadable. Committing appends the changes since the last save or commit to journal.bin instead (the app
commits after every addition: a few KB fsynced instead of the whole index rewritten); loading replays it.
No pickle anywhere: numpy files are written and read with allow_pickle=False.
"""
from __future__ import annotations

import enum
import hashlib
import io
import json
import logging
import os
import shutil
import threading
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import hnswlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from . import journal
from .atomic import fsync_path, write_atomically
from .brute import normalize, recall_at_k, top_k
from .hamming import BinaryCodec, CodeKind, hamming_search
from .images import ImageSource, load_image
from .journal import JOURNAL_FILE

if TYPE_CHECKING:
    from .models import Embedder

log = logging.getLogger(__name__)

FORMAT = "twinsight-index"
FORMAT_VERSION = 2  # 2: journal.bin (an older reader would ignore it and lose committed additions)
HNSW_FILE, VECTORS_FILE, METADATA_FILE, META_FILE, HAMMING_FILE = (
    "index.hnsw", "vectors.npy", "metadata.parquet", "meta.json", "hamming.npz")
IMAGES_DIR = "images"
INDEX_SOURCE_PREFIX = "index:"  # image stored inside the index directory
DATASET_SOURCE_PREFIX = "dataset:"  # a row of the index's dataset
BUILTIN_SOURCE_PREFIX = "builtin:"  # an image of the built-in offline gallery
MIN_CAPACITY = 1024
EXACT_SEARCH_BELOW = 1000  # galleries this small are searched exactly by default (as fast as the graph, and exact)
# hnswlib holds the float32 vectors; the index keeps a float16 copy (half the memory of a second float32 one) for
# the linear scans of exact and label-filtered search. float16 scores of unit vectors are off by at most ~1e-3,
# so every item scored within SCAN_MARGIN of the k-th best is re-scored in float32: the answer stays exact.
SCAN_DTYPE = np.float16
SCAN_MARGIN = 2e-3
# The ef a build settles on: the smallest of these (from the index's own ef up) whose estimated recall@10 reaches
# the target. At 100k clustered items ef=96 gives 0.986; at 1M it gives 0.77 and 0.98 needs ~512.
DEFAULT_TARGET_RECALL = 0.98
EF_STEPS = (96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 2048)
# commit() folds the journal into a full save once it holds this many added or deleted items: every item in it
# is re-inserted into the graph on each load (0.3-0.7 ms each at 100k items), while a full save rewrites the whole index.
JOURNAL_LIMIT = 1024
VERSIONED_PACKAGES = ("hnswlib", "numpy", "pyarrow", "torch", "datasets", "open_clip_torch", "transformers", "pillow")


class Metric(str, enum.Enum):
    """How `search` compares vectors. Scores are always cosine similarities (1 = same direction)."""

    COSINE = "cosine"  # hnswlib graph (or exact with exact=True)
    HAMMING = "hamming"  # popcount over packed binary codes, then cosine re-rank of the best candidates


@dataclass(frozen=True)
class HnswParams:
    """hnswlib parameters; the defaults give recall@10 >= 0.98 on 20k clustered vectors (tests/).

    M: links per node (memory ~ M*2*4 bytes per item on top of the vector). Higher M improves recall on
       high-dimensional or clustered data and slows insertion; 12-48 is the useful range.
    ef_construction: candidate list size while inserting. Higher builds a better graph (recall) at a
       linear cost in build time; it cannot be changed after items are added.
    ef: candidate list size while searching (at least k). The query-time speed/recall dial: higher is
       more accurate and slower. Not stored in the hnswlib file, so it is re-applied after every load.
    """

    M: int = 24
    ef_construction: int = 200
    ef: int = 96
    seed: int = 100

    def __post_init__(self):
        if self.M < 2 or self.ef_construction < 1 or self.ef < 1:
            raise ValueError(f"Invalid hnsw parameters {self}: need M >= 2, ef_construction >= 1, ef >= 1.")


def meta_header(model: str, dim: int, params: HnswParams, max_elements: int) -> dict:
    """meta.json's first fields, the same for every store: format, model, metric and graph parameters."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "dim": dim,
        "metric": Metric.COSINE.value,
        "hnsw": {"M": params.M, "ef_construction": params.ef_construction, "ef": params.ef, "seed": params.seed,
                 "max_elements": max_elements},
    }


@dataclass(frozen=True)
class Item:
    """One gallery item. `row` is the dataset row (None for added images); `source` says where the image is."""

    id: int
    row: int | None
    label: str | None
    source: str
    added: datetime


@dataclass(frozen=True)
class SearchHit:
    id: int
    score: float  # cosine similarity
    label: str | None
    source: str
    row: int | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EfTuning:
    """What GalleryIndex.tune_ef measured: the ef it set and the estimated recall@k of each ef it tried."""

    ef: int
    recall: float  # estimated recall@k at `ef`
    target: float
    k: int
    queries: int
    count: int  # items in the index when measured
    tried: tuple[tuple[int, float], ...]  # (ef, estimated recall@k) of each ef measured, ascending

    @property
    def met(self) -> bool:
        return self.recall >= self.target


class IndexMismatchError(ValueError):
    """The index was built with another model (or dimension) than the one in use."""


class IndexFormatError(ValueError):
    """The directory is not a Twinsight index, or its files are damaged."""


class _RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return versions


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class GalleryIndex:
    """Vectors + hnswlib graph + metadata of one gallery, for one model.

    Thread safety: searches run concurrently; `add`, `delete` and `resize` take an exclusive lock
    (hnswlib's insertion is not safe beside queries); `save` and `commit` run beside searches.

    Persistence: `save()` writes the whole index; `commit()` makes the changes since the last save or commit
    durable by appending them to the directory's journal, and folds the journal into a full save once it
    holds `journal_limit` items (default JOURNAL_LIMIT).
    """

    store = None  # where the vectors live when not in this process's hnswlib graph (MilvusIndex: a StoreSpec)

    def __init__(
        self,
        dim: int,
        model: str,
        params: HnswParams = HnswParams(),
        *,
        embedder: "Embedder | None" = None,
        source: dict | None = None,
        path: str | os.PathLike | None = None,
        capacity: int = MIN_CAPACITY,
    ):
        if embedder is not None and (embedder.name != model or embedder.dim != dim):
            raise IndexMismatchError(_mismatch_message(path or "(new index)", model, dim, embedder))
        self.dim = int(dim)
        self.model = model
        self.params = params
        self.embedder = embedder
        self.source: dict = dict(source or {})  # where the items came from (dataset/folder), for meta.json
        self.path = Path(path) if path else None
        self.created = _utcnow()
        self.extra: dict[str, Any] = {}  # free-form, saved in meta.json (build progress lives here)
        self._lock = _RWLock()
        self._save_lock = threading.Lock()
        self._swap_lock = threading.Lock()  # held while save() swaps the directory in (image() waits on it)
        self._hnsw = hnswlib.Index(space="cosine", dim=self.dim)
        self._hnsw.init_index(max_elements=max(capacity, MIN_CAPACITY), M=params.M,
                              ef_construction=params.ef_construction, random_seed=params.seed)
        self._hnsw.set_ef(params.ef)
        self._vectors = np.zeros((0, self.dim), dtype=SCAN_DTYPE)
        self._count = 0
        self._ids: list[int] = []
        self._rows: list[int | None] = []
        self._labels: list[str | None] = []
        self._sources: list[str] = []
        self._added: list[datetime] = []
        self._position: dict[int, int] = {}
        self._next_id = 0
        self._pending_images: dict[int, Image.Image] = {}
        self._codec: BinaryCodec | None = None
        self._codes = np.zeros((0, 1), dtype=np.uint64)
        self._dataset = None  # opened lazily by image() for dataset rows
        self.journal_limit = JOURNAL_LIMIT
        self._uncommitted: list[tuple[str, Sequence[int]]] = []  # ("add" | "delete", ids) since the last save/commit
        self._base: str | None = None  # meta.json checksum of the full save at self.path (what the journal extends)
        self._base_state: tuple | None = None  # _saved_state() as of that save
        self._meta_written: str | None = None  # _journal_meta() as of that save or the last journal record
        self._journal_end = 0  # bytes of complete records in the journal
        self._journal_seen = 0  # the journal's size when this object last read or wrote it (another writer's grows it)
        self._journaled = 0  # items added or deleted through the journal since the full save

    # -- basic facts -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) in self._position

    def __repr__(self) -> str:
        return f"GalleryIndex({len(self)} items, model={self.model!r}, dim={self.dim}, path={self.path})"

    @property
    def ids(self) -> list[int]:
        with self._lock.read():
            return list(self._ids)

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
        """Raise ef to the smallest of EF_STEPS (starting from the current ef) whose estimated recall@k reaches
        `target_recall` (recall grows with ef), or to the largest if none does; ef never goes down. Returns what
        was measured.

        Recall is estimated on `queries` probes against exact search. A probe is a random item moved away from
        itself, in a random direction, by its distance to its nearest other item: as far from the gallery as
        the gallery's items are from each other, and not a node of the graph. (An item's own vector is found
        with its neighbours through its links and overstates recall: 0.998 against 0.986 for fresh queries at
        ef=96 and 100k clustered items.) On clustered vectors this estimate is lower than fresh queries' recall,
        so the ef chosen errs towards recall (docs/BENCHMARKS.md, 3). Costs `queries` exact scans (~6 ms each
        at 100k items, ~120 ms at 1M). Searches running meanwhile may use a larger ef than usual.
        """
        if not 0 < target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}.")
        with self._lock.read():
            n = self._count
            if n <= k:
                raise ValueError(f"tune_ef needs more than k={k} items; this index has {n}.")
            rng = np.random.default_rng(seed)
            items = self._float32(rng.choice(n, min(queries, n), replace=False))
            steps = [self.ef] + [ef for ef in EF_STEPS if ef > self.ef]
            self._hnsw.set_ef(max(steps[0], k))  # an item's own neighbours are easy to find
            _, distances = self._hnsw.knn_query(items, k=2, num_threads=-1)  # the item itself, then its nearest
            gaps = np.sqrt(np.maximum(2.0 * distances[:, 1], 0.0))  # unit vectors: |a - b|^2 = 2 (1 - cos)
            directions = rng.normal(size=items.shape).astype(np.float32)
            directions -= (directions * items).sum(axis=1, keepdims=True) * items  # orthogonal to the item
            probes = normalize(items + gaps[:, None] * normalize(directions))
            truth = np.array([self._exact(probe, k)[0] for probe in probes])  # positions, (probes, k)
            recalls: dict[int, float] = {}  # step index -> estimated recall

            def reaches(i: int) -> bool:
                if i not in recalls:
                    self._hnsw.set_ef(max(steps[i], k))
                    found, _ = self._hnsw.knn_query(probes, k=k, num_threads=-1)
                    recalls[i] = recall_at_k([[self._position[int(x)] for x in row] for row in found], truth)
                return recalls[i] >= target_recall

            # Double ef until the target is reached, then bisect the steps in between: a few measurements at
            # large ef instead of all of them (on hard data every step falls short and each costs more).
            below, above, i = -1, len(steps) - 1, 0
            while not reaches(i):
                below = i
                if i == len(steps) - 1:
                    break
                i = next((j for j in range(i + 1, len(steps)) if steps[j] >= 2 * steps[i]), len(steps) - 1)
            else:
                above = i
                while above - below > 1:
                    middle = (below + above) // 2
                    below, above = (below, middle) if reaches(middle) else (middle, above)
            ef, recall = steps[above], recalls[above]
            self._hnsw.set_ef(ef)
            self.params = replace(self.params, ef=ef)
        tried = tuple((steps[i], recalls[i]) for i in sorted(recalls))
        return EfTuning(ef, recall, target_recall, k, len(probes), n, tried)

    def get(self, item_id: int) -> Item:
        with self._lock.read():
            pos = self._pos(item_id)
            return Item(self._ids[pos], self._rows[pos], self._labels[pos], self._sources[pos], self._added[pos])

    def vectors(self, ids: Sequence[int] | None = None) -> np.ndarray:
        """The stored float32 vectors, of all items (in `ids` order) or of the given ids."""
        with self._lock.read():
            positions = range(self._count) if ids is None else [self._pos(i) for i in ids]
            return self._float32(positions)

    def _float32(self, positions: Iterable[int]) -> np.ndarray:
        """float32 vectors at these positions, from hnswlib's store (~25 us per vector: for a few)."""
        labels = [self._ids[p] for p in positions]
        if not labels:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._hnsw.get_items(labels), dtype=np.float32)

    def labels(self) -> list[str]:
        """Distinct labels, sorted."""
        with self._lock.read():
            return sorted({label for label in self._labels if label is not None})

    def _pos(self, item_id: int) -> int:
        try:
            return self._position[int(item_id)]
        except KeyError:
            raise KeyError(f"No item with id {item_id} in this index ({self._count} items).") from None

    # -- updates ---------------------------------------------------------------------------------------
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
        vectors, labels, sources, rows = self._check_added(vectors, labels, sources, rows)
        n = len(vectors)
        if n == 0:
            return []
        with self._lock.write():
            ids = list(range(self._next_id, self._next_id + n))
            for offset, image in enumerate(_images or []):
                if image is not None:  # kept in memory until the next save or commit writes it to images/
                    self._pending_images[ids[offset]] = image
                    sources[offset] = f"{INDEX_SOURCE_PREFIX}{IMAGES_DIR}/{ids[offset]}.png"
            self._insert(ids, vectors, rows, labels, sources, [_utcnow()] * n)
            self._uncommitted.append(("add", range(ids[0], ids[-1] + 1)))  # a range: a million ids cost nothing
            return ids

    def _insert(self, ids: list[int], vectors: np.ndarray, rows, labels, sources, added: list[datetime]) -> None:
        """Add items with these ids (new or replayed from the journal). Holds the write lock."""
        n = len(ids)
        self._reserve(n)
        self._hnsw.add_items(vectors, np.asarray(ids, dtype=np.int64))
        start = self._count
        self._vectors[start : start + n] = vectors
        if self._codec is not None:
            self._codes[start : start + n] = self._codec.encode(vectors)
        for offset, item_id in enumerate(ids):
            self._position[item_id] = start + offset
        self._ids += ids
        self._rows += [None if r is None else int(r) for r in rows]
        self._labels += [None if label is None else str(label) for label in labels]
        self._sources += [str(s) for s in sources]
        self._added += added
        self._count += n
        self._next_id = max(self._next_id, max(ids) + 1)

    def _check_added(self, vectors, labels, sources, rows) -> tuple[np.ndarray, list, list, list]:
        """add_vectors' arguments, normalised and checked (shared with MilvusIndex)."""
        vectors = normalize(vectors)
        n = len(vectors)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"Vectors have dimension {vectors.shape[1]}; this index holds {self.dim}-d vectors of {self.model}.")
        labels = list(labels) if labels is not None else [None] * n
        sources = list(sources) if sources is not None else [""] * n
        rows = list(rows) if rows is not None else [None] * n
        if not len(labels) == len(sources) == len(rows) == n:
            raise ValueError(f"{n} vectors but {len(labels)} labels, {len(sources)} sources, {len(rows)} rows.")
        return vectors, labels, sources, rows

    def add(self, images: Sequence[ImageSource], labels: Sequence[str | None] | None = None) -> list[int]:
        """Embed and add images: file paths (referenced by path) or PIL images, bytes, arrays, dataset image
        values (stored in the index directory's images/ on the next save). Needs the index's embedder.
        New rows of the index's own dataset or folder: use sync()."""
        embedder = self._require_embedder()
        images = [_undecoded(image) for image in images]
        decoded = [load_image(image) for image in images]
        vectors = embedder.encode_images(decoded)
        sources = [str(Path(image).resolve()) if isinstance(image, (str, os.PathLike)) else "" for image in images]
        stored = [None if source else image for source, image in zip(sources, decoded)]
        return self.add_vectors(vectors, labels, sources, _images=stored)

    def delete(self, ids: Iterable[int], missing_ok: bool = False) -> int:
        """Remove items by id without rebuilding; returns how many were removed."""
        ids = [int(i) for i in ids]
        with self._lock.write():
            missing = [i for i in ids if i not in self._position]
            if missing and not missing_ok:
                raise KeyError(f"No items with ids {missing[:10]} in this index; nothing was deleted.")
            removed = self._remove(ids)
            self._uncommitted.append(("delete", removed))
        return len(removed)

    def _remove(self, ids: Iterable[int]) -> list[int]:
        """Remove the items of these ids that exist; returns their ids. Holds the write lock."""
        removed = []
        for item_id in dict.fromkeys(ids):
            pos = self._position.pop(item_id, None)
            if pos is None:
                continue
            self._hnsw.mark_deleted(item_id)
            self._pending_images.pop(item_id, None)
            last = self._count - 1
            if pos != last:  # swap-remove keeps every column aligned
                self._vectors[pos] = self._vectors[last]
                if self._codec is not None:
                    self._codes[pos] = self._codes[last]
                for column in (self._ids, self._rows, self._labels, self._sources, self._added):
                    column[pos] = column[last]
                self._position[self._ids[pos]] = pos
            for column in (self._ids, self._rows, self._labels, self._sources, self._added):
                column.pop()
            self._count -= 1
            removed.append(item_id)
        return removed

    def _reserve(self, n: int) -> None:
        """Grow the hnswlib capacity and the vector store (by doubling) so n more items fit. Holds the write lock."""
        needed = self._hnsw.get_current_count() + n  # deleted items keep their hnswlib slot
        if needed > self._hnsw.get_max_elements():
            self._hnsw.resize_index(max(needed, 2 * self._hnsw.get_max_elements()))
        if self._count + n > len(self._vectors):
            size = max(self._count + n, 2 * len(self._vectors), 64)
            grown = np.zeros((size, self.dim), dtype=SCAN_DTYPE)
            grown[: self._count] = self._vectors[: self._count]
            self._vectors = grown
            if self._codec is not None:
                codes = np.zeros((size, self._codes.shape[1]), dtype=np.uint64)
                codes[: self._count] = self._codes[: self._count]
                self._codes = codes

    # -- Hamming mode ----------------------------------------------------------------------------------
    def enable_hamming(self, kind: CodeKind | str = CodeKind.SIGN, bits: int = 0) -> BinaryCodec:
        """Compute binary codes for every item (kept up to date by add/delete; saved in meta.json)."""
        with self._lock.write():
            codec = BinaryCodec.fit(self._vectors[: self._count].astype(np.float32), kind, bits)
            self._set_codec(codec)
            return codec

    def _set_codec(self, codec: BinaryCodec | None) -> None:
        self._codec = codec
        if codec is not None:
            codes = np.zeros((len(self._vectors), codec.bytes_per_code() // 8), dtype=np.uint64)
            codes[: self._count] = codec.encode(self._vectors[: self._count].astype(np.float32))
            self._codes = codes

    @property
    def hamming(self) -> BinaryCodec | None:
        return self._codec

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of the float32 vectors and of the binary codes (0 when Hamming mode is off)."""
        per_code = self._codec.bytes_per_code() if self._codec else 0
        return {"float32": self._count * self.dim * 4, "hamming": self._count * per_code}

    # -- search ----------------------------------------------------------------------------------------
    def embed_query(self, query: Any = None, *, image: ImageSource | None = None, text: str | None = None,
                    vector: np.ndarray | None = None) -> np.ndarray:
        """The (dim,) query vector. A positional `query` is a vector if it is a 1-D float array, an image if it
        is a str naming an existing file or anything else (Path, bytes, PIL, HxWxC arrays). A positional str
        that names no file is refused: "photo.jpg" must not silently become a search for those words, so text
        goes by `text=`."""
        given = [q is not None for q in (query, image, text, vector)]
        if sum(given) != 1:
            raise ValueError("Search with exactly one of: an image, a text, or a vector.")
        if query is not None:
            if isinstance(query, np.ndarray) and query.ndim == 1 and np.issubdtype(query.dtype, np.floating):
                vector = query
            elif isinstance(query, str) and not os.path.isfile(query):
                raise ValueError(f"{query[:80]!r} is not an existing file. To search for these words, call "
                                 f"search(text=...); for an image, pass image= a file that exists (or a Path).")
            else:
                image = query
        if vector is not None:
            vector = np.asarray(vector, dtype=np.float32).reshape(-1)
            if vector.shape[0] != self.dim:
                raise ValueError(f"The query vector has dimension {vector.shape[0]}; this index holds {self.dim}-d vectors of {self.model}.")
            return normalize(vector)[0]
        embedder = self._require_embedder()
        if text is not None:
            return embedder.encode_texts([text])[0]
        return embedder.encode_images([load_image(image)])[0]

    def search(
        self,
        query: Any = None,
        k: int = 10,
        label_filter: str | Iterable[str] | None = None,
        *,
        image: ImageSource | None = None,
        text: str | None = None,
        vector: np.ndarray | None = None,
        metric: Metric | str = Metric.COSINE,
        exact: bool | None = None,
        rerank: int = 500,
    ) -> list[SearchHit]:
        """The k most similar items, best first, with cosine similarity scores.

        label_filter: a label or labels; only those items are searched (exactly, since a filtered graph
        walk misses rare labels). metric=HAMMING: popcount over binary codes, then the best `rerank`
        candidates re-ranked by cosine. exact=True: brute force over all vectors; False: the hnsw graph;
        None (default): brute force for galleries under EXACT_SEARCH_BELOW items, else the graph.
        """
        q = self.embed_query(query, image=image, text=text, vector=vector)
        metric = Metric(metric)
        with self._lock.read():
            if self._count == 0 or k <= 0:
                return []
            k = min(int(k), self._count)
            allowed = self._filter_positions(label_filter)
            if metric is Metric.HAMMING:
                positions, scores = self._hamming(q, k, allowed, rerank)
            elif allowed is not None or (self._count < EXACT_SEARCH_BELOW if exact is None else exact):
                positions, scores = self._exact(q, k, allowed)
            else:
                positions, scores = self._graph(q, k)
            return [SearchHit(self._ids[p], float(s), self._labels[p], self._sources[p], self._rows[p])
                    for p, s in zip(positions, scores)]

    def similar(self, item_id: int, k: int = 10, **options) -> list[SearchHit]:
        """Search with the stored vector of an item (the app's "click a result"): no image decoding or model
        call; the item itself comes first. Options as for search()."""
        return self.search(vector=self.vectors([item_id])[0], k=k, **options)

    def _filter_positions(self, label_filter) -> np.ndarray | None:
        if label_filter is None:
            return None
        wanted = {label_filter} if isinstance(label_filter, str) else set(label_filter)
        return np.array([p for p, label in enumerate(self._labels) if label in wanted], dtype=np.int64)

    def _exact(self, q, k, allowed=None):
        positions = np.arange(self._count) if allowed is None else allowed
        if len(positions) == 0:
            return positions, np.zeros(0, dtype=np.float32)
        k = min(k, len(positions))
        rough = half_precision_scores(self._vectors[: self._count] if allowed is None else self._vectors[allowed], q)
        kth = np.partition(rough, len(rough) - k)[len(rough) - k]
        candidates = positions[rough >= kth - SCAN_MARGIN]
        scores = self._float32(candidates) @ q
        best = top_k(scores, k)[0]
        return candidates[best], scores[best]

    def _graph(self, q, k):
        try:
            labels, distances = self._hnsw.knn_query(q, k=k, num_threads=1)
        except RuntimeError:  # too few reachable non-deleted neighbours (many deletions): answer exactly
            return self._exact(q, k)
        return [self._position[int(i)] for i in labels[0]], 1.0 - distances[0]

    def _hamming(self, q, k, allowed, rerank):
        if self._codec is None:
            raise ValueError("Hamming mode is off for this index: call index.enable_hamming() first "
                             "(or build with --hamming).")
        codes = self._codes[: self._count] if allowed is None else self._codes[allowed]
        candidates = hamming_search(self._codec.encode(q)[0], codes, max(k, rerank))
        if allowed is not None:
            candidates = allowed[candidates]
        return self._exact(q, k, np.sort(candidates))  # cosine re-rank of the shortlist

    # -- images ----------------------------------------------------------------------------------------
    def image(self, item_id: int) -> Image.Image:
        """The image of an item of this index. Only ever opens the source recorded for that item."""
        item = self.get(item_id)
        pending = self._pending_images.get(item.id)
        if pending is not None:
            return pending.copy()
        source = item.source
        if source.startswith(INDEX_SOURCE_PREFIX):
            if self.path is None:
                raise FileNotFoundError(f"Item {item.id}'s image is stored with the index, which was never saved.")
            root = self.path.resolve()
            path = (root / source[len(INDEX_SOURCE_PREFIX):]).resolve()
            if root not in path.parents:
                raise IndexFormatError(f"Item {item.id} points outside its index directory ({source}).")
            with self._swap_lock:  # not while a save swaps the directory in (the file is briefly elsewhere)
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise FileNotFoundError(f"Item {item.id}'s image {path} is missing ({exc.strerror}): "
                                            "restore the index directory or rebuild it.") from None
            return load_image(data)
        if source.startswith(BUILTIN_SOURCE_PREFIX):
            from .gallery import builtin_image

            return builtin_image(source[len(BUILTIN_SOURCE_PREFIX):])
        if source.startswith(DATASET_SOURCE_PREFIX):
            if self._dataset is None:
                from .data import open_source

                self._dataset = open_source(**self.source_args())
            return self._dataset.image_at(item.row)
        if not source:
            raise FileNotFoundError(f"Item {item.id} has no image source (it was added as a bare vector).")
        return load_image(source)

    def attach_source(self, source) -> None:
        """Use an already-open data.GallerySource for image() of dataset rows instead of reopening it."""
        self._dataset = source

    def sync(self, progress=None, **build_options) -> "GalleryIndex":
        """Embed what this index's dataset or folder gained since it was built (new rows or files), in place,
        and save. Returns self, with a fresh `build_report`."""
        from .build import build_index

        if not self.source.get("dataset"):
            raise ValueError("This index has no dataset or folder to sync from; add images with add().")
        return build_index(self.source["dataset"], model=self._require_embedder(), into=self, progress=progress,
                           **{k: v for k, v in self.source_args().items() if k != "dataset"}, **build_options)

    def source_args(self) -> dict:
        """Arguments of data.open_source that reopen this index's dataset."""
        keys = ("dataset", "config", "split", "revision", "image_column", "label_column")
        return {key: self.source[key] for key in keys if self.source.get(key) is not None}

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the whole index atomically to `path` (default: where it was loaded from or last saved), with
        the journal folded in."""
        target = Path(path or self.path or "")
        if not str(target):
            raise ValueError("Where should the index go? Pass save(path).")
        target = target.absolute()
        with self._save_lock, _writer_lock(target):
            return self._save(target)

    def _save(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(target)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        taken: list[tuple[str, Sequence[int]]] = []
        try:
            with self._lock.read():  # the state as of one moment: additions and deletions wait meanwhile
                meta = self._write_state(tmp)
                taken, self._uncommitted = self._uncommitted, []
                saved = set(self._pending_images)
                state, written = self._saved_state(), self._journal_meta()
            # Checksums and fsyncs read the files only, so changes go on meanwhile (the next commit or save
            # records them): about a second of a 100k x 1280-d save that additions no longer wait for.
            base = _seal(tmp, meta)
            with self._swap_lock:
                _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if taken:
                with self._lock.write():
                    self._uncommitted[:0] = taken  # not saved after all: still to be committed
            raise
        self.path = target
        self._base, self._base_state, self._meta_written = base, state, written
        self._journal_end = self._journal_seen = self._journaled = 0
        for item_id in saved:
            self._pending_images.pop(item_id, None)
        return target

    def commit(self, journal_limit: int | None = None) -> Path:
        """Make the changes since the last save or commit durable, at the cost of those changes: the added and
        deleted items, and `source` and `extra` if they changed, are appended to the index directory's journal
        and fsynced. When the journal would pass `journal_limit` items (default: the index's `journal_limit`),
        or when something the journal does not record changed (ef, Hamming codes), this is a full save()
        instead. Returns the index directory."""
        if self.path is None:
            raise ValueError("This index was never saved: save(path) it once, then commit() changes.")
        limit = self.journal_limit if journal_limit is None else journal_limit
        with self._save_lock, _writer_lock(self.path):
            with self._lock.read():
                added = [i for op, ids in self._uncommitted if op == "add" for i in ids if i in self._position]
                deleted = [i for op, ids in self._uncommitted if op == "delete" for i in ids]
                meta, same_base = self._journal_meta(), self._saved_state() == self._base_state
                if not added and not deleted and meta == self._meta_written and same_base:
                    return self.path
                if self._base is not None and same_base and self._journaled + len(added) + len(deleted) <= limit:
                    if not self._written_by_another():
                        self._append_journal(added, deleted, meta)
                        return self.path
                    # Records on top of another writer's state would make the directory unloadable. This
                    # process's view is saved over it instead, as saves always did (last writer wins).
                    log.warning("%s was saved or committed by another process since this one opened it; writing "
                                "this process's index over it (re-run `python -m indexer build` to re-add dataset "
                                "rows the other process embedded)", self.path)
            return self._save(self.path)

    def _written_by_another(self) -> bool:
        """Did another process save this directory, or append to its journal, since we last read or wrote it?"""
        try:
            on_disk = json.loads((self.path / META_FILE).read_text()).get("checksum")
            journal_size = journal.size(self.path / JOURNAL_FILE)
        except (OSError, ValueError):
            return True
        return on_disk != self._base or journal_size != self._journal_seen

    def _append_journal(self, added: list[int], deleted: list[int], meta: str) -> None:
        """One journal record for these changes; images first, so an acknowledged record's images exist."""
        positions = [self._position[i] for i in added]
        stored = {i: self._pending_images[i] for i in added if i in self._pending_images}
        digests, images = {}, self.path / IMAGES_DIR
        if stored and not images.is_dir():
            images.mkdir()
            fsync_path(self.path)
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
            "base": self._base, "next_id": self._next_id, "deleted": deleted, "images": digests,
            "rows": [self._rows[p] for p in positions], "labels": [self._labels[p] for p in positions],
            "sources": [self._sources[p] for p in positions], "added": [self._added[p].isoformat() for p in positions],
        }
        if meta != self._meta_written:
            header["meta"] = json.loads(meta)
        record = journal.encode(header, {"ids": np.asarray(added, dtype=np.int64), "vectors": self._float32(positions)})
        self._journal_end = self._journal_seen = journal.append(self.path / JOURNAL_FILE, record, self._journal_end)
        self._journaled += len(added) + len(deleted)
        self._uncommitted.clear()
        self._meta_written = meta
        for item_id in stored:
            self._pending_images.pop(item_id, None)  # image() now reads the file

    def _saved_state(self) -> tuple:
        """What a full save records that the journal does not."""
        return self.params, self._codec, self.created

    def _journal_meta(self) -> str:
        """The meta.json fields a journal record carries when they changed (a build's progress lives here)."""
        return json.dumps({"source": self.source, "extra": self.extra}, sort_keys=True, default=str)

    def _replay_journal(self, verify: bool) -> None:
        """Apply the journal's records on top of the loaded full save."""
        file = self.path / JOURNAL_FILE
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
                raise IndexFormatError(f"{file} continues another save of this index (not the one in {self.path}): "
                                       f"delete {file.name} to open the index as of its last full save.")
            for item_id, digest in header["images"].items():
                image = self.path / IMAGES_DIR / f"{item_id}.png"
                if verify and (not image.is_file() or _sha256(image) != digest):
                    raise IndexFormatError(f"{image} is missing or damaged (checksum mismatch): restore the index "
                                           "directory, or rebuild it.")
            columns["ids"] += [int(i) for i in record.array("ids")]
            columns["vectors"].append(record.array("vectors"))
            for key in ("rows", "labels", "sources"):
                columns[key] += header[key]
            columns["added"] += [datetime.fromisoformat(t) for t in header["added"]]
            deleted += header["deleted"]
            if "meta" in header:
                self.source, self.extra = dict(header["meta"]["source"]), dict(header["meta"]["extra"])
            self._next_id = max(self._next_id, int(header["next_id"]))
        # All additions in one insert (hnswlib spreads a batch over the cores), then all deletions: ids are never
        # reused, so this ends in the same items as replaying record by record.
        if columns["ids"]:
            self._insert(columns["ids"], np.concatenate(columns["vectors"]), columns["rows"], columns["labels"],
                         columns["sources"], columns["added"])
        self._remove(deleted)
        self._journaled = len(columns["ids"]) + len(deleted)

    def _write_state(self, tmp: Path) -> dict:
        """Write the data files into `tmp`; returns meta.json's content but for the files' checksums. Holds the
        read lock."""
        n = self._count
        self._hnsw.save_index(str(tmp / HNSW_FILE))
        np.save(tmp / VECTORS_FILE, self._vectors[:n], allow_pickle=False)
        table = pa.table({
            "id": pa.array(self._ids, pa.int64()),
            "row": pa.array(self._rows, pa.int64()),
            "label": pa.array(self._labels, pa.string()),
            "source": pa.array(self._sources, pa.string()),
            "added": pa.array(self._added, pa.timestamp("us", tz="UTC")),
        })
        pq.write_table(table, tmp / METADATA_FILE)
        self._write_images(tmp)
        if self._codec is not None and self._codec.kind is CodeKind.ITQ:
            np.savez(tmp / HAMMING_FILE, mean=self._codec.mean, projection=self._codec.projection)
        return {
            **meta_header(self.model, self.dim, self.params, self._hnsw.get_max_elements()),
            "hamming": self._codec.to_dict() if self._codec else None,
            "source": json.loads(json.dumps(self.source, default=str)),  # copies: they may change once unlocked
            "count": n,
            "next_id": self._next_id,
            "created": self.created.isoformat(),
            "saved": _utcnow().isoformat(),
            "versions": library_versions(),
            "extra": json.loads(json.dumps(self.extra, default=str)),
        }

    def _write_images(self, tmp: Path) -> None:
        prefix = f"{INDEX_SOURCE_PREFIX}{IMAGES_DIR}/"
        for item_id, source in zip(self._ids, self._sources):
            if not source.startswith(prefix):
                continue
            dest = tmp / source[len(INDEX_SOURCE_PREFIX):]
            dest.parent.mkdir(exist_ok=True)
            if item_id in self._pending_images:
                self._pending_images[item_id].save(dest, format="PNG")
            elif self.path is not None and (self.path / dest.relative_to(tmp)).is_file():
                old = self.path / dest.relative_to(tmp)
                try:
                    os.link(old, dest)
                except OSError:
                    shutil.copy2(old, dest)

    @classmethod
    def load(cls, path: str | os.PathLike, embedder: "Embedder | None" = None, *, ef: int | None = None,
             verify: bool = True) -> "GalleryIndex":
        """Load an index directory. With an embedder, refuses an index built by another model or dimension."""
        path = Path(path).absolute()
        meta = read_meta(path)
        if (meta.get("store") or {}).get("kind", "hnsw") != "hnsw":  # vectors live in Milvus (indexer/store.py)
            from .milvus_store import MilvusIndex

            return MilvusIndex.load(path, embedder, ef=ef, verify=verify)
        if embedder is not None and (embedder.name != meta["model"] or embedder.dim != meta["dim"]):
            raise IndexMismatchError(_mismatch_message(path, meta["model"], meta["dim"], embedder))
        if verify:
            for name, digest in meta["files"].items():
                file = path / name
                if not file.is_file() or _sha256(file) != digest:
                    raise IndexFormatError(f"{file} is missing or damaged (checksum mismatch): rebuild the index "
                                           f"with `python -m indexer build ... --out {path}`.")
        hnsw_meta = meta["hnsw"]
        params = HnswParams(hnsw_meta["M"], hnsw_meta["ef_construction"], int(ef or hnsw_meta["ef"]), hnsw_meta.get("seed", 100))
        index = cls(meta["dim"], meta["model"], params, embedder=embedder, source=meta.get("source"), path=path)
        index.created = datetime.fromisoformat(meta["created"])
        index.extra = dict(meta.get("extra") or {})
        index._hnsw = hnswlib.Index(space="cosine", dim=index.dim)
        name = HNSW_FILE
        try:
            index._hnsw.load_index(str(path / name), max_elements=hnsw_meta["max_elements"])
            name = VECTORS_FILE
            vectors = np.load(path / name, allow_pickle=False)
            name = METADATA_FILE
            table = pq.read_table(path / name).to_pydict()
        except (OSError, ValueError, RuntimeError, pa.ArrowException) as exc:  # unverified and damaged
            raise IndexFormatError(f"{path / name} is missing or damaged ({type(exc).__name__}: {exc}); rebuild the "
                                   f"index with `python -m indexer build ... --out {path}`.") from None
        index._hnsw.set_ef(params.ef)  # ef is not stored in the hnswlib file
        if len(vectors) != len(table["id"]) or len(vectors) != meta["count"]:
            raise IndexFormatError(f"{path}: vectors ({len(vectors)}) and metadata ({len(table['id'])}) disagree; rebuild the index.")
        index._vectors = np.ascontiguousarray(vectors, dtype=SCAN_DTYPE)  # older indexes saved float32
        index._count = len(vectors)
        index._ids, index._rows, index._labels = table["id"], table["row"], table["label"]
        index._sources, index._added = table["source"], table["added"]
        index._position = {item_id: pos for pos, item_id in enumerate(index._ids)}
        index._next_id = int(meta["next_id"])
        if meta.get("hamming"):
            kind = CodeKind(meta["hamming"]["kind"])
            codec = BinaryCodec(kind, int(meta["hamming"]["bits"]))
            if kind is CodeKind.ITQ:
                with np.load(path / HAMMING_FILE, allow_pickle=False) as data:
                    codec.mean, codec.projection = data["mean"], data["projection"]
            index._set_codec(codec)
        index._base, index._base_state = meta["checksum"], index._saved_state()
        index._replay_journal(verify)
        index._meta_written = index._journal_meta()
        return index

    def close(self) -> None:
        """Release the store (nothing to do for hnswlib; MilvusIndex closes its connection)."""

    def _require_embedder(self) -> "Embedder":
        if self.embedder is None:
            raise ValueError(f"This index has no model attached; open it with open_index(path) or pass "
                             f"embedder=load_embedder({self.model!r}).")
        return self.embedder


def half_precision_scores(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    """float16 rows times a float32 query, as float32 scores (torch: numpy has no fast float16 product)."""
    import torch

    return (torch.from_numpy(vectors) @ torch.from_numpy(q.astype(np.float16))).float().numpy()


def _undecoded(image):
    """A datasets Image value left undecoded ({'bytes': ..., 'path': ...}) -> bytes or path."""
    if isinstance(image, dict):
        return image.get("bytes") or image.get("path")
    return image


def _seal(tmp: Path, meta: dict) -> str:
    """Checksum the files written into `tmp`, write meta.json and fsync it all; returns the overall checksum."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    checksums = {p.relative_to(tmp).as_posix(): _sha256(p) for p in files}
    meta = {**meta, "files": checksums,
            "checksum": hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    for p in files + [tmp / META_FILE]:
        fsync_path(p)
    return meta["checksum"]


def read_meta(path: str | os.PathLike) -> dict:
    path = Path(path).absolute()
    _recover(path)
    file = path / META_FILE
    if not file.is_file():
        raise IndexFormatError(f"{path} is not a Twinsight index (no {META_FILE}); build one with "
                               f"`python -m indexer build --dataset ID_OR_PATH --out {path}`.")
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise IndexFormatError(f"{file} is not valid JSON ({exc}); rebuild the index.") from None
    if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise IndexFormatError(f"{path} holds format {meta.get('format')!r} v{meta.get('format_version')}; this "
                               f"Twinsight reads {FORMAT!r} up to v{FORMAT_VERSION}: upgrade Twinsight or rebuild.")
    if meta.get("metric") != Metric.COSINE.value:
        raise IndexFormatError(f"{path} uses metric {meta.get('metric')!r}; Twinsight indexes are cosine: rebuild.")
    return meta


def _mismatch_message(path, model: str, dim: int, embedder: "Embedder") -> str:
    return (f"index at {path} was built with model {model} (dim {dim}); this app loaded model {embedder.name} "
            f"(dim {embedder.dim}): rebuild with --model {embedder.name} or start the app with --model {model}.")


@contextmanager
def _writer_lock(target: Path) -> Iterator[None]:
    """An exclusive lock between processes writing the index at `target` (a sibling file: the directory itself
    is replaced by saves). Where there is no fcntl (Windows), processes are not locked out from each other."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


def _backups(path: Path) -> Iterator[Path]:
    return path.parent.glob(f".{path.name}.old-*")


def _replace_dir(tmp: Path, target: Path) -> None:
    """Put `tmp` in place of `target`. The old index is renamed aside first and only removed after the new
    one is in place; if we die between the two renames, `_recover` restores the old one on the next load."""
    if target.exists():
        backup = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, backup)
        os.rename(tmp, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.rename(tmp, target)
    fsync_path(target.parent)


def _remove_stale_temps(target: Path, older_than_s: float = 3600.0) -> None:
    """Temp directories of saves that crashed (an hour old: no live save takes that long)."""
    import time

    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            if time.time() - stale.stat().st_mtime > older_than_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def _recover(path: Path) -> None:
    """After a crash between the renames of `_replace_dir`, bring the previous index back."""
    if (path / META_FILE).is_file():
        for stale in _backups(path):
            shutil.rmtree(stale, ignore_errors=True)
        return
    for backup in sorted(_backups(path), key=lambda p: p.stat().st_mtime, reverse=True):
        if (backup / META_FILE).is_file() and not path.exists():
            log.warning("restoring %s from %s (an earlier save was interrupted)", path, backup)
            os.rename(backup, path)
            return


def open_index(path: str | os.PathLike, embedder: "Embedder | None" = None, *, ef: int | None = None,
               load_model: bool = True) -> GalleryIndex:
    """Open an index directory. Without an embedder, the model named in meta.json is loaded (shared
    instance) unless load_model=False (vector search only)."""
    if embedder is None and load_model:
        from .models import load_embedder

        embedder = load_embedder(read_meta(Path(path).absolute())["model"])
    return GalleryIndex.load(path, embedder, ef=ef)
