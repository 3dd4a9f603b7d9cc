"""Gallery indexes: the stores that hold the vectors (hnswlib in this process, or Milvus), the index directory on
disk, and the gallery that composes a store with the model and the images' sources."""
from .directory import read_meta
from .gallery import Gallery
from .open import GalleryIndex, MilvusIndex, load_index, open_index
from .store import HNSW, MILVUS, StoreSpec, VectorStore, parse_store
from .types import (DEFAULT_TARGET_RECALL, EF_STEPS, EXACT_SEARCH_BELOW, JOURNAL_LIMIT, META_FILE, EfTuning, HnswParams,
                    IndexFormatError, IndexMismatchError, Item, Metric, SearchHit)

__all__ = [
    "DEFAULT_TARGET_RECALL", "EF_STEPS", "EXACT_SEARCH_BELOW", "HNSW", "JOURNAL_LIMIT", "META_FILE", "MILVUS",
    "EfTuning", "Gallery", "GalleryIndex", "HnswParams", "IndexFormatError", "IndexMismatchError", "Item", "Metric",
    "MilvusIndex", "SearchHit", "StoreSpec", "VectorStore", "load_index", "open_index", "parse_store", "read_meta",
]
