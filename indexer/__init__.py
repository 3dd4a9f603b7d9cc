"""Twinsight's library: embedding models, image loading, gallery indexes. Never imports gradio.

Exports load lazily: `import indexer` costs milliseconds, and torch, hnswlib or pyarrow load only when a name
that needs them is first used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.9.0"

_EXPORTS = {
    "BinaryCodec": ".hamming",
    "BuildReport": ".build",
    "CapabilityError": ".models",
    "CodeKind": ".hamming",
    "CompareResult": ".compare",
    "EfTuning": ".index",
    "Embedder": ".models",
    "Gallery": ".index",
    "GalleryIndex": ".index",
    "HnswParams": ".index",
    "ImageError": ".images",
    "IndexFormatError": ".index",
    "IndexMismatchError": ".index",
    "Item": ".index",
    "Metric": ".index",
    "MilvusIndex": ".index",
    "Mode": ".verify",
    "Prediction": ".models",
    "Reduce": ".verify",
    "SearchHit": ".index",
    "Verification": ".verify",
    "Verifier": ".verify",
    "build_index": ".build",
    "compare_images": ".compare",
    "create_embedder": ".models",
    "load_embedder": ".models",
    "load_image": ".images",
    "open_index": ".index",
    "sync_index": ".build",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from .build import BuildReport, build_index, sync_index
    from .hamming import BinaryCodec, CodeKind
    from .images import ImageError, load_image
    from .index import (EfTuning, Gallery, GalleryIndex, HnswParams, IndexFormatError, IndexMismatchError, Item,
                        Metric, MilvusIndex, SearchHit, open_index)
    from .compare import CompareResult, compare_images
    from .models import CapabilityError, Embedder, Prediction, create_embedder, load_embedder
    from .verify import Mode, Reduce, Verification, Verifier
