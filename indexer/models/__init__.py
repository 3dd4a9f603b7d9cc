from .base import CapabilityError, Embedder, Prediction
from .registry import OFFLINE_NOTICE, clear_cache, create_embedder, load_embedder
from .spec import DEFAULT_CLIP_SPEC, OFFLINE_SPEC, Backend, ModelSpec

__all__ = [
    "Backend",
    "CapabilityError",
    "DEFAULT_CLIP_SPEC",
    "Embedder",
    "ModelSpec",
    "OFFLINE_NOTICE",
    "OFFLINE_SPEC",
    "Prediction",
    "clear_cache",
    "create_embedder",
    "load_embedder",
]
