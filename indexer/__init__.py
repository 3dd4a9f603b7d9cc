"""Twinsight's library: embedding models, image loading, gallery indexes. Never imports gradio."""
from .build import BuildReport, build_index
from .hamming import BinaryCodec, CodeKind
from .images import ImageError, load_image
from .index import (EfTuning, GalleryIndex, HnswParams, IndexFormatError, IndexMismatchError, Item, Metric, SearchHit,
                    open_index)
from .models import CapabilityError, Embedder, Prediction, create_embedder, load_embedder
from .verify import Mode, Reduce, Verification, Verifier
from .compare import CompareResult, compare_images

__all__ = [
    "BinaryCodec",
    "BuildReport",
    "CapabilityError",
    "CodeKind",
    "CompareResult",
    "EfTuning",
    "Embedder",
    "GalleryIndex",
    "HnswParams",
    "ImageError",
    "IndexFormatError",
    "IndexMismatchError",
    "Item",
    "Metric",
    "Mode",
    "Prediction",
    "Reduce",
    "SearchHit",
    "Verification",
    "Verifier",
    "build_index",
    "compare_images",
    "create_embedder",
    "load_embedder",
    "load_image",
    "open_index",
]
