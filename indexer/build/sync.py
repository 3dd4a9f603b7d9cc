"""Bring an index up to date with its own dataset or folder."""
from __future__ import annotations

from ..index import Gallery
from .pipeline import ProgressCallback, build_index
from ..errors import UserInputError


def sync_index(index: Gallery, progress: ProgressCallback | None = None, **build_options) -> Gallery:
    """Embed what this index's dataset or folder gained since it was built (new rows or files), in place,
    and save. Returns the index, with a fresh `build_report`."""
    if not index.source.get("dataset"):
        raise UserInputError("This index has no dataset or folder to sync from; add images with add().")
    return build_index(index.source["dataset"], model=index.require_embedder(), into=index, progress=progress,
                       **{k: v for k, v in index.source_args().items() if k != "dataset"}, **build_options)
