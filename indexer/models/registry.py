"""One process-wide registry: the app, the indexer and every tab share a single loaded model per spec."""
from __future__ import annotations

import logging
import os
import socket
import threading
from urllib.parse import urlparse

import torch

from ..config import settings
from ..device import Precision, pick_device, pick_dtype
from .base import Embedder
from .spec import DEFAULT_CLIP_SPEC, OFFLINE_SPEC, Backend, ModelSpec

log = logging.getLogger(__name__)

OFFLINE_NOTICE = (
    "offline: EfficientNet-Lite0 is in use; text search and zero-shot labels need a CLIP model "
    "(its weights could not be downloaded or found in the local cache)."
)
HUB_PROBE_TIMEOUT_S = 3.0

_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], Embedder] = {}


def create_embedder(
    spec: str | ModelSpec, device: str | torch.device | None = None, precision: Precision | str | None = None
) -> Embedder:
    """Build a new embedder for `spec` (uncached). Prefer `load_embedder`, which shares instances."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
    device = pick_device(str(device) if device else None)
    dtype = pick_dtype(device, precision)  # CapabilityError for int8 where it cannot run
    if spec.backend is Backend.AUTO:
        return _create_auto(device, precision)
    embedder = _create(spec, device, dtype)
    if Precision(precision or settings().precision) is Precision.INT8:
        embedder.use_int8()
    return embedder


def _create(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> Embedder:
    if spec.backend is Backend.EFFNET_LITE0:
        from .effnet import EfficientNetLite0Embedder

        return EfficientNetLite0Embedder(device, dtype)
    if spec.backend is Backend.SIAMESE:
        from .siamese_backend import SiameseEncoderEmbedder

        return SiameseEncoderEmbedder(spec, device, dtype)
    if spec.backend is Backend.OPEN_CLIP:
        from .open_clip_backend import OpenClipEmbedder

        return OpenClipEmbedder(spec, device, dtype)
    from .hf_backend import HFEmbedder

    return HFEmbedder(spec, device, dtype, trust_remote_code=settings().trust_remote_code)


def load_embedder(
    spec: str = "auto", device: str | torch.device | None = None, precision: Precision | str | None = None
) -> Embedder:
    """The shared instance for `spec` (loaded once, thread-safe)."""
    key = (str(spec or "auto"), str(device or ""), str(precision or ""))
    with _lock:
        if key not in _loaded:
            embedder = create_embedder(spec, device, precision)
            _loaded[key] = embedder
            _loaded.setdefault((embedder.name, key[1], key[2]), embedder)
        return _loaded[key]


def clear_cache() -> None:
    with _lock:
        _loaded.clear()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """A bounded TCP probe, so a dead network fails over in seconds instead of hanging on retries."""
    if hub_offline():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def cached_clip_weights(spec: ModelSpec) -> str | None:
    """Path of the CLIP weights in the local hub cache, or None, without touching the network."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    repo = (open_clip.get_pretrained_cfg(spec.name, spec.pretrained) or {}).get("hf_hub", "").rstrip("/")
    if not repo:
        return None
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _create_auto(device: torch.device, precision) -> Embedder:
    clip = ModelSpec.parse(DEFAULT_CLIP_SPEC)
    try:
        cached = cached_clip_weights(clip)
        if cached:
            embedder = create_embedder(ModelSpec(clip.backend, clip.name, cached), device, precision)
            # The same weights as the tag: keep the tag as the name, so gallery indexes (keyed and checked by
            # model name) built while downloading still match once the weights come from the cache.
            embedder.name = str(clip)
            return embedder
        if hub_reachable():
            return create_embedder(clip, device, precision)
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face hub is unreachable"
    except Exception as exc:  # any failure to get CLIP must still give a working app
        reason = f"loading {DEFAULT_CLIP_SPEC} failed: {exc}"
    log.warning("auto model: %s; falling back to %s", reason, OFFLINE_SPEC)
    embedder = create_embedder(OFFLINE_SPEC, device, precision)
    embedder.notice = OFFLINE_NOTICE
    return embedder
