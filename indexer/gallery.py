"""The app's gallery: which dataset it opens (the built-in offline gallery of real photos is in indexer/sources/).

Resolution order: the explicit `source` (app.py --gallery), then $TWINSIGHT_GALLERY, then the default hub
dataset when the hub is reachable, else the built-in gallery (photos that ship inside scikit-image).
Indexes are cached under a directory keyed by model and dataset, so a restart loads instead of re-embedding.
"""
from __future__ import annotations

import logging
import os

from .build import ProgressCallback, build_index
from .index import Gallery
from .sources import BUILTIN, SourceKind

log = logging.getLogger(__name__)

GALLERY_ENV = "TWINSIGHT_GALLERY"
# AI-Lab-Makerere/beans: MIT licence, 3 labels (angular_leaf_spot, bean_rust, healthy), parquet on the hub;
# its validation split is 133 photos (18.5 MB), small enough to embed at first start on a CPU Space.
DEFAULT_HUB_GALLERY = "AI-Lab-Makerere/beans"
DEFAULT_HUB_SPLIT = "validation"
DEFAULT_HUB_LICENSE = "MIT"

def resolve_gallery(source: str | os.PathLike | None = None) -> tuple[str, str | None]:
    """(dataset, split) the gallery should show: explicit source, $TWINSIGHT_GALLERY, hub default, built-in."""
    from .models.registry import hub_reachable  # heavy (torch): only when the gallery is chosen

    chosen = str(source) if source else os.environ.get(GALLERY_ENV, "").strip()
    if chosen:
        return chosen, DEFAULT_HUB_SPLIT if chosen == DEFAULT_HUB_GALLERY else None
    if hub_reachable():
        return DEFAULT_HUB_GALLERY, DEFAULT_HUB_SPLIT
    return BUILTIN, None


def open_default_gallery(
    embedder,
    source: str | os.PathLike | None = None,
    cache_root: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    split: str | None = None,
    limit: int | None = None,
    show_progress: bool = False,
    store: str | None = None,
) -> Gallery:
    """The app's gallery index for `embedder`, built on first use and loaded from the cache afterwards.

    If the default hub dataset cannot be loaded (hub down, download error), falls back to the built-in
    gallery; an explicitly chosen source that fails raises its error (the user asked for it).
    """
    dataset, default_split = resolve_gallery(source)
    explicit = bool(source) or bool(os.environ.get(GALLERY_ENV, "").strip())
    kwargs = dict(model=embedder, index_root=cache_root, progress=progress, limit=limit, show_progress=show_progress,
                  store=store)  # None: $TWINSIGHT_STORE, else hnswlib
    try:
        return build_index(dataset, split=split or default_split, **kwargs)
    except Exception as exc:
        if explicit or dataset == BUILTIN:
            raise
        log.warning("default gallery %s unavailable (%s); using the built-in offline gallery", dataset, exc)
        return build_index(BUILTIN, **kwargs)


def describe_gallery(index: Gallery) -> str:
    """One line for the UI, e.g. 'AI-Lab-Makerere/beans [validation] · 133 images · 3 labels · MIT'."""
    source = index.source
    name = "built-in gallery (scikit-image photos)" if source.get("kind") == SourceKind.BUILTIN.value else str(
        source.get("dataset") or "custom gallery")
    if source.get("split"):
        name += f" [{source['split']}]"
    parts = [name, f"{len(index)} images", f"{len(index.labels())} labels"]
    if source.get("dataset") == DEFAULT_HUB_GALLERY:
        parts.append(DEFAULT_HUB_LICENSE)
    return " · ".join(parts)
