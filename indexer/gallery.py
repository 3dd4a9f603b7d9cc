"""The app's gallery: which dataset it opens, and the built-in offline gallery of real photos.

Resolution order: the explicit `source` (app.py --gallery), then $TWINSIGHT_GALLERY, then the default hub
dataset when the hub is reachable, else the built-in gallery (photos that ship inside scikit-image).
Indexes are cached under a directory keyed by model and dataset, so a restart loads instead of re-embedding.
"""
from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from .build import ProgressCallback, build_index, default_index_root
from .data import BUILTIN, GallerySource, Record, SourceKind
from .images import load_image
from .env import env_int
from .index import BUILTIN_SOURCE_PREFIX, GalleryIndex
from .stream import stream_head, stream_info

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

# skimage.data name -> label. All these files ship inside the scikit-image wheel (no download).
BUILTIN_IMAGES: dict[str, str] = {
    "astronaut": "person",
    "camera": "person",
    "chelsea": "cat",
    "coffee": "coffee cup",
    "rocket": "rocket",
    "horse": "horse",
    "motorcycle": "motorcycle",
    "coins": "coins",
    "moon": "moon",
    "hubble_deep_field": "galaxies",
    "immunohistochemistry": "microscopy",
    "retina": "retina",
    "clock": "clock",
    "page": "text",
    "text": "text",
    "brick": "texture",
    "grass": "texture",
    "gravel": "texture",
    "colorwheel": "color wheel",
    "logo": "logo",
}


def builtin_image(name: str) -> Image.Image:
    """An image of the built-in gallery by name (only names in BUILTIN_IMAGES)."""
    if name not in BUILTIN_IMAGES:
        raise KeyError(f"{name!r} is not in the built-in gallery ({', '.join(BUILTIN_IMAGES)}).")
    import skimage.data

    if name == "motorcycle":
        array = skimage.data.stereo_motorcycle()[0]
    else:
        array = getattr(skimage.data, name)()
    if array.dtype == bool:  # the horse is a silhouette mask
        array = np.where(array, 0, 255).astype(np.uint8)
    return load_image(array)


class BuiltinSource(GallerySource):
    """The offline gallery: ~20 real photos and textures from scikit-image, labelled by hand."""

    kind = SourceKind.BUILTIN

    def __init__(self):
        self.names = list(BUILTIN_IMAGES)

    def __len__(self):
        return len(self.names)

    def records(self, start=0, stop=None):
        for row in range(start, min(stop if stop is not None else len(self), len(self))):
            name = self.names[row]
            yield Record(row, partial(builtin_image, name), BUILTIN_IMAGES[name], f"{BUILTIN_SOURCE_PREFIX}{name}")

    def image_at(self, row):
        return builtin_image(self.names[int(row)])

    def describe(self):
        return {"kind": self.kind.value, "dataset": BUILTIN, "label_column": "label", "num_rows": len(self)}


def resolve_gallery(source: str | os.PathLike | None = None) -> tuple[str, str | None]:
    """(dataset, split) the gallery should show: explicit source, $TWINSIGHT_GALLERY, hub default, built-in."""
    from .models.registry import hub_reachable

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
) -> GalleryIndex:
    """The app's gallery index for `embedder`, built on first use and loaded from the cache afterwards.

    If the default hub dataset cannot be loaded (hub down, download error), falls back to the built-in
    gallery; an explicitly chosen source that fails raises its error (the user asked for it).
    """
    dataset, default_split = resolve_gallery(source)
    explicit = bool(source) or bool(os.environ.get(GALLERY_ENV, "").strip())
    kwargs = dict(model=embedder, index_root=cache_root, progress=progress, limit=limit, show_progress=show_progress,
                  store=store)  # None: $TWINSIGHT_STORE, else hnswlib
    try:
        if not explicit and dataset != BUILTIN:  # the default hub gallery: its first rows, streamed once
            root = Path(cache_root) if cache_root else default_index_root()
            size = env_int(GALLERY_SIZE_ENV, DEFAULT_GALLERY_SIZE)
            head = stream_head(dataset, split or default_split, size, root / "_streams")
            return build_index(head, **kwargs)
        return build_index(dataset, split=split or default_split, **kwargs)
    except Exception as exc:
        if explicit or dataset == BUILTIN:
            raise
        log.warning("default gallery %s unavailable (%s); using the built-in offline gallery", dataset, exc)
        return build_index(BUILTIN, **kwargs)



def describe_gallery(index: GalleryIndex) -> str:
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
