"""Twinsight's library: embedding models, image loading, gallery indexes. Never imports gradio."""
from .build import BuildReport, build_index, sync_index
from .hamming import BinaryCodec, CodeKind
from .images import ImageError, load_image
from .index import (EfTuning, Gallery, GalleryIndex, HnswParams, IndexFormatError, IndexMismatchError, Item, Metric,
                    MilvusIndex, SearchHit, open_index)
from .models import CapabilityError, Embedder, Prediction, create_embedder, load_embedder

__all__ = [
    "BinaryCodec",
    "BuildReport",
    "CapabilityError",
    "CodeKind",
    "EfTuning",
    "Embedder",
    "Gallery",
    "GalleryIndex",
    "HnswParams",
    "ImageError",
    "IndexFormatError",
    "IndexMismatchError",
    "Item",
    "Metric",
    "MilvusIndex",
    "Prediction",
    "SearchHit",
    "build_index",
    "create_embedder",
    "load_embedder",
    "load_image",
    "open_index",
    "sync_index",
]
