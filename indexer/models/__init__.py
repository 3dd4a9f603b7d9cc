"""Embedding models behind one spec string (`load_embedder("auto")`); exports load lazily (see indexer/_lazy.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "Backend": ".spec",
    "CapabilityError": ".base",
    "DEFAULT_CLIP_SPEC": ".spec",
    "Embedder": ".base",
    "ModelSpec": ".spec",
    "OFFLINE_NOTICE": ".registry",
    "OFFLINE_SPEC": ".spec",
    "Prediction": ".base",
    "clear_cache": ".registry",
    "create_embedder": ".registry",
    "load_embedder": ".registry",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .base import CapabilityError, Embedder, Prediction  # noqa: F401
    from .registry import OFFLINE_NOTICE, clear_cache, create_embedder, load_embedder  # noqa: F401
    from .spec import DEFAULT_CLIP_SPEC, OFFLINE_SPEC, Backend, ModelSpec  # noqa: F401
