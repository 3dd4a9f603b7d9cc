"""The app's gallery: which dataset it opens (the built-in offline gallery of real photos is in indexer/sources/).

Resolution order: the explicit `source` (app.py --gallery), then $TWINSIGHT_GALLERY, then the default hub
dataset when the hub is reachable, else the built-in gallery (photos that ship inside scikit-image).
Indexes are cached under a directory keyed by model and dataset, so a restart loads instead of re-embedding.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .build import ProgressCallback, build_index, default_index_root
from .config import settings
from .index import Gallery
from .sources import BUILTIN, SourceKind
from .sources.stream import stream_head, stream_info

log = logging.getLogger(__name__)

GALLERY_ENV = "TWINSIGHT_GALLERY"
# timm/oxford-iiit-pet: CC BY-SA 4.0 (its card), parquet on the hub, an Image column and a ClassLabel of 37 cat
# and dog breeds: real photos in varied scenes, where visual search shows something (beans: 3 kinds of leaf). Its
# first TWINSIGHT_GALLERY_SIZE rows of the train split are streamed (not the whole 378 MB split downloaded).
DEFAULT_HUB_GALLERY = "timm/oxford-iiit-pet"
DEFAULT_HUB_SPLIT = "train"
DEFAULT_HUB_LICENSE = "CC BY-SA 4.0"
GALLERY_SIZE_ENV = "TWINSIGHT_GALLERY_SIZE"
DEFAULT_GALLERY_SIZE = 2000


def resolve_gallery(source: str | os.PathLike | None = None) -> tuple[str, str | None]:
    """(dataset, split) the gallery should show: explicit source, $TWINSIGHT_GALLERY, hub default, built-in."""
    from .models.registry import hub_reachable  # heavy (torch): only when the gallery is chosen

    chosen = str(source) if source else (settings().gallery or "")
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
    explicit = bool(source) or bool(settings().gallery)
    kwargs = dict(model=embedder, index_root=cache_root, progress=progress, limit=limit, show_progress=show_progress,
                  store=store)  # None: $TWINSIGHT_STORE, else hnswlib
    try:
        if not explicit and dataset != BUILTIN:  # the default hub gallery: its first rows, streamed once
            root = Path(cache_root) if cache_root else default_index_root()
            size = settings().gallery_size
            head = stream_head(dataset, split or default_split, size, root / "_streams")
            return build_index(head, **kwargs)
        return build_index(dataset, split=split or default_split, **kwargs)
    except Exception as exc:
        if explicit or dataset == BUILTIN:
            raise
        log.warning("default gallery %s unavailable (%s); using the built-in offline gallery", dataset, exc)
        return build_index(BUILTIN, **kwargs)


def describe_gallery(index: Gallery) -> str:
    """One line for the UI, e.g. 'timm/oxford-iiit-pet [train, first 2,000 rows] · 2000 images · 37 labels · CC BY-SA 4.0'."""
    source = index.source
    streamed = stream_info(source.get("dataset")) if source.get("kind") == SourceKind.SAVED.value else None
    name = "built-in gallery (scikit-image photos)" if source.get("kind") == SourceKind.BUILTIN.value else str(
        streamed.dataset if streamed else source.get("dataset") or "custom gallery")
    if streamed:
        name += f" [{streamed.split}, first {streamed.rows:,} rows]"
    elif source.get("split"):
        name += f" [{source['split']}]"
    parts = [name, f"{len(index)} images", f"{len(index.labels())} labels"]
    if name.startswith(DEFAULT_HUB_GALLERY + " "):
        parts.append(DEFAULT_HUB_LICENSE)
    return " · ".join(parts)
