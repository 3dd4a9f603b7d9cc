"""The index's vocabulary, shared by both stores: parameters, items, hits, errors and the directory's file names."""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from ..brute import normalize
from ..errors import StoredIndexError, UserInputError

if TYPE_CHECKING:
    from ..models import Embedder

FORMAT = "twinsight-index"
FORMAT_VERSION = 2  # 2: journal.bin (an older reader would ignore it and lose committed additions)
HNSW_FILE, VECTORS_FILE, METADATA_FILE, META_FILE, HAMMING_FILE = (
    "index.hnsw", "vectors.npy", "metadata.parquet", "meta.json", "hamming.npz")
IMAGES_DIR = "images"
INDEX_SOURCE_PREFIX = "index:"  # image stored inside the index directory
MIN_CAPACITY = 1024
EXACT_SEARCH_BELOW = 1000  # galleries this small are searched exactly by default (as fast as the graph, and exact)
# The ef a build settles on: the smallest of these (from the index's own ef up) whose estimated recall@10 reaches
# the target. At 100k clustered items ef=96 gives 0.986; at 1M it gives 0.77 and 0.98 needs ~512.
DEFAULT_TARGET_RECALL = 0.98
EF_STEPS = (96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 2048)
# commit() folds the journal into a full save once it holds this many added or deleted items: every item in it
# is re-inserted into the graph on each load (0.3-0.7 ms each at 100k items), while a full save rewrites the whole index.
JOURNAL_LIMIT = 1024


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
            raise UserInputError(f"Invalid hnsw parameters {self}: need M >= 2, ef_construction >= 1, ef >= 1.")

    @classmethod
    def from_meta(cls, hnsw_meta: dict, ef: int | None = None) -> "HnswParams":
        """The parameters meta.json records (its "hnsw" entry), with `ef` instead of the recorded one if given."""
        return cls(hnsw_meta["M"], hnsw_meta["ef_construction"], int(ef or hnsw_meta["ef"]), hnsw_meta.get("seed", 100))


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


class IndexMismatchError(StoredIndexError):
    """The index was built with another model (or dimension) than the one in use."""


class IndexFormatError(StoredIndexError):
    """The directory is not a Twinsight index, or its files are damaged."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def mismatch_message(path, model: str, dim: int, embedder: "Embedder") -> str:
    return (f"index at {path} was built with model {model} (dim {dim}); this app loaded model {embedder.name} "
            f"(dim {embedder.dim}): rebuild with --model {embedder.name} or start the app with --model {model}.")


def check_embedder(path, model: str, dim: int, embedder: "Embedder | None") -> None:
    """Refuse an embedder of another model or dimension than the index's."""
    if embedder is not None and (embedder.name != model or embedder.dim != dim):
        raise IndexMismatchError(mismatch_message(path, model, dim, embedder))


def check_added(dim: int, model: str, vectors, labels, sources, rows) -> tuple[np.ndarray, list, list, list]:
    """add_vectors' arguments, normalised and checked (the same for every store)."""
    vectors = normalize(vectors)
    n = len(vectors)
    if vectors.shape[1] != dim:
        raise UserInputError(f"Vectors have dimension {vectors.shape[1]}; this index holds {dim}-d vectors of {model}.")
    labels = list(labels) if labels is not None else [None] * n
    sources = list(sources) if sources is not None else [""] * n
    rows = list(rows) if rows is not None else [None] * n
    if not len(labels) == len(sources) == len(rows) == n:
        raise UserInputError(f"{n} vectors but {len(labels)} labels, {len(sources)} sources, {len(rows)} rows.")
    return vectors, labels, sources, rows
