"""Heavy objects every tab shares, loaded once per process (lazily, or eagerly by `warm_up`).

Per-user data never lives here; only the model and the gallery index, which all users share.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import gradio as gr

from indexer import CapabilityError, Embedder, GalleryIndex, ImageError, load_embedder
from indexer.gallery import describe_gallery, open_default_gallery

log = logging.getLogger(__name__)


@dataclass
class Settings:
    model: str = field(default_factory=lambda: os.environ.get("TWINSIGHT_MODEL", "auto"))
    gallery: str | None = field(default_factory=lambda: os.environ.get("TWINSIGHT_GALLERY") or None)


settings = Settings()
_lock = threading.Lock()
_gallery: GalleryIndex | None = None


def configure(model: str | None = None, gallery: str | None = None) -> None:
    if model:
        settings.model = model
    if gallery:
        settings.gallery = gallery


def embedder() -> Embedder:
    """The one shared model (the registry loads it once per process)."""
    return load_embedder(settings.model)


def gallery(progress=None) -> GalleryIndex:
    """The shared gallery index: loaded from the on-disk cache, or built once on first use."""
    global _gallery
    with _lock:
        if _gallery is None:
            _gallery = open_default_gallery(embedder(), source=settings.gallery, progress=progress, show_progress=True)
        return _gallery


def use_gallery(index: GalleryIndex | None) -> None:
    """Replace the shared gallery (tests inject small indexes; None reloads the configured one)."""
    global _gallery
    with _lock:
        _gallery = index


def warm_up() -> None:
    """Load everything at start-up, so the first user does not wait for it."""
    log.info("model ready: %s", embedder())
    log.info("gallery ready: %s", describe_gallery(gallery()))


def status_markdown() -> str:
    model = embedder()
    lines = [f"**Model:** `{model.name}` ({model.dim}-d) on **{model.device.type}** in {str(model.dtype).replace('torch.', '')}"]
    if model.notice:
        lines.append(f"⚠️ {model.notice}")
    return "  \n".join(lines)


def user_error(exc: Exception) -> gr.Error:
    """Turn a library error into a friendly message in the page (never a traceback)."""
    return gr.Error(str(exc), title="Cannot do that")


FRIENDLY_ERRORS = (ImageError, CapabilityError, ValueError)
