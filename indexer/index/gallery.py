"""Gallery: a store of vectors (hnswlib or Milvus), the model that embeds queries and added images, and the lookup
of each item's image, composed into the index the app, the CLI and the builder use.

`GalleryIndex` is a gallery on the hnswlib store, `MilvusIndex` one on a Milvus collection (indexer/index/open.py);
`open_index(DIR)` opens either, as meta.json says.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from PIL import Image

from ..brute import normalize
from ..hamming import BinaryCodec, CodeKind
from ..images import ImageSource, load_image
from .item_images import ItemImages
from .store import StoreSpec, VectorStore
from .types import DEFAULT_TARGET_RECALL, EfTuning, HnswParams, Item, Metric, SearchHit, check_embedder
from ..errors import UserInputError

if TYPE_CHECKING:
    from ..models import Embedder
    from ..sources import GallerySource


class Gallery:
    """Search, add and show the items of one gallery, for one model: the store holds the vectors and metadata
    (and persists them: save, commit), the embedder turns images and texts into query vectors."""

    def __init__(self, store: VectorStore, embedder: "Embedder | None" = None):
        check_embedder(store.path or "(new index)", store.model, store.dim, embedder)
        self.store = store
        self.embedder = embedder
        self._images = ItemImages(store)

    # -- the store's facts and meta.json fields -----------------------------------------------------------
    dim = property(lambda self: self.store.dim)
    model = property(lambda self: self.store.model)
    spec: StoreSpec = property(lambda self: self.store.spec)  # where the vectors live
    tunes_ef: bool = property(lambda self: self.store.tunes_ef)
    ids = property(lambda self: self.store.ids)
    capacity = property(lambda self: self.store.capacity)
    hamming = property(lambda self: self.store.hamming)

    def _store_field(name: str):  # noqa: N805 - builds a property at class creation
        return property(lambda self: getattr(self.store, name), lambda self, value: setattr(self.store, name, value))

    params: HnswParams = _store_field("params")
    ef: int = _store_field("ef")
    source: dict = _store_field("source")  # where the items came from (dataset/folder), for meta.json
    extra: dict = _store_field("extra")  # free-form, saved in meta.json (build progress lives here)
    created: datetime = _store_field("created")
    path: Path | None = _store_field("path")
    journal_limit: int = _store_field("journal_limit")
    del _store_field

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, item_id: int) -> bool:
        return item_id in self.store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"

    # -- the store's operations ---------------------------------------------------------------------------
    def get(self, item_id: int) -> Item:
        return self.store.get(item_id)

    def vectors(self, ids: Sequence[int] | None = None) -> np.ndarray:
        """The stored float32 vectors, of all items (in `ids` order) or of the given ids."""
        return self.store.vectors(ids)

    def labels(self) -> list[str]:
        """Distinct labels, sorted."""
        return self.store.labels()

    def add_vectors(self, vectors: np.ndarray, labels: Sequence[str | None] | None = None,
                    sources: Sequence[str] | None = None, rows: Sequence[int | None] | None = None,
                    **options) -> list[int]:
        """Add embeddings (normalised here) with their metadata; returns the new ids."""
        return self.store.add_vectors(vectors, labels, sources, rows, **options)

    def delete(self, ids: Iterable[int], missing_ok: bool = False) -> int:
        """Remove items by id without rebuilding; returns how many were removed."""
        return self.store.delete(ids, missing_ok)

    def tune_ef(self, target_recall: float = DEFAULT_TARGET_RECALL, k: int = 10, queries: int = 200,
                seed: int = 0) -> EfTuning:
        """Raise the search ef until the estimated recall@k reaches `target_recall` (HnswStore.tune_ef); a store
        whose graph is not in this process (store.tunes_ef False) refuses with how to set ef instead."""
        return self.store.tune_ef(target_recall, k, queries, seed)

    def enable_hamming(self, kind: CodeKind | str = CodeKind.SIGN, bits: int = 0) -> BinaryCodec:
        """Compute binary codes for every item (kept up to date by add/delete; saved in meta.json)."""
        return self.store.enable_hamming(kind, bits)

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of the float32 vectors and of the binary codes (0 when Hamming mode is off)."""
        return self.store.memory_bytes()

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the whole index to `path` (default: where it was loaded from or last saved)."""
        return self.store.save(path)

    def commit(self, journal_limit: int | None = None) -> Path:
        """Make the changes since the last save or commit durable, cheaply where the store can (hnswlib: a journal
        append, folded into a full save once it holds `journal_limit` items; Milvus: a save)."""
        return self.store.commit(journal_limit)

    def close(self) -> None:
        """Release the store (Milvus: its connection)."""
        self.store.close()

    # -- queries --------------------------------------------------------------------------------------------
    def embed_query(self, query: Any = None, *, image: ImageSource | None = None, text: str | None = None,
                    vector: np.ndarray | None = None) -> np.ndarray:
        """The (dim,) query vector. A positional `query` is a vector if it is a 1-D float array, an image if it
        is a str naming an existing file or anything else (Path, bytes, PIL, HxWxC arrays). A positional str
        that names no file is refused: "photo.jpg" must not silently become a search for those words, so text
        goes by `text=`."""
        given = [q is not None for q in (query, image, text, vector)]
        if sum(given) != 1:
            raise UserInputError("Search with exactly one of: an image, a text, or a vector.")
        if query is not None:
            if isinstance(query, np.ndarray) and query.ndim == 1 and np.issubdtype(query.dtype, np.floating):
                vector = query
            elif isinstance(query, str) and not os.path.isfile(query):
                raise UserInputError(f"{query[:80]!r} is not an existing file. To search for these words, call "
                                 f"search(text=...); for an image, pass image= a file that exists (or a Path).")
            else:
                image = query
        if vector is not None:
            vector = np.asarray(vector, dtype=np.float32).reshape(-1)
            if vector.shape[0] != self.dim:
                raise UserInputError(f"The query vector has dimension {vector.shape[0]}; this index holds {self.dim}-d vectors of {self.model}.")
            return normalize(vector)[0]
        embedder = self.require_embedder()
        if text is not None:
            return embedder.encode_texts([text])[0]
        return embedder.encode_images([load_image(image)])[0]

    def search(self, query: Any = None, k: int = 10, label_filter: str | Iterable[str] | None = None, *,
               image: ImageSource | None = None, text: str | None = None, vector: np.ndarray | None = None,
               metric: Metric | str = Metric.COSINE, exact: bool | None = None, rerank: int = 500) -> list[SearchHit]:
        """The k most similar items, best first, with cosine similarity scores.

        label_filter: a label or labels; only those items are searched (exactly, since a filtered graph
        walk misses rare labels). metric=HAMMING: popcount over binary codes, then the best `rerank`
        candidates re-ranked by cosine. exact=True: brute force over all vectors; False: the hnsw graph;
        None (default): brute force for galleries under EXACT_SEARCH_BELOW items, else the graph.
        """
        q = self.embed_query(query, image=image, text=text, vector=vector)
        return self.store.search(q, k, label_filter, metric=metric, exact=exact, rerank=rerank)

    def similar(self, item_id: int, k: int = 10, **options) -> list[SearchHit]:
        """Search with the stored vector of an item (the app's "click a result"): no image decoding or model
        call; the item itself comes first. Options as for search()."""
        return self.search(vector=self.vectors([item_id])[0], k=k, **options)

    # -- images -------------------------------------------------------------------------------------------
    def add(self, images: Sequence[ImageSource], labels: Sequence[str | None] | None = None) -> list[int]:
        """Embed and add images: file paths (referenced by path) or PIL images, bytes, arrays, dataset image
        values (stored in the index directory's images/ on the next save). Needs the index's embedder.
        New rows of the index's own dataset or folder: use indexer.build.sync_index()."""
        embedder = self.require_embedder()
        images = [_undecoded(image) for image in images]
        decoded = [load_image(image) for image in images]
        vectors = embedder.encode_images(decoded)
        sources = [str(Path(image).resolve()) if isinstance(image, (str, os.PathLike)) else "" for image in images]
        stored = [None if source else image for source, image in zip(sources, decoded)]
        return self.add_vectors(vectors, labels, sources, _images=stored)

    def image(self, item_id: int) -> Image.Image:
        """The image of an item of this index. Only ever opens the source recorded for that item."""
        return self._images.image(self.get(item_id))

    def attach_source(self, source: "GallerySource") -> None:
        """Use an already-open sources.GallerySource for image() of dataset rows instead of reopening it."""
        self._images.attach(source)

    def source_args(self) -> dict:
        """Arguments of sources.open_source that reopen this index's dataset."""
        return self._images.source_args()

    def require_embedder(self) -> "Embedder":
        if self.embedder is None:
            raise UserInputError(f"This index has no model attached; open it with open_index(path) or pass "
                             f"embedder=load_embedder({self.model!r}).")
        return self.embedder


def _undecoded(image):
    """A datasets Image value left undecoded ({'bytes': ..., 'path': ...}) -> bytes or path."""
    if isinstance(image, dict):
        return image.get("bytes") or image.get("path")
    return image
