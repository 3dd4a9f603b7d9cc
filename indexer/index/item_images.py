"""The image of a gallery item, from wherever its `source` says it is: the index directory, the built-in gallery,
a row of the index's dataset (through the already-open source when there is one), or a file."""
from __future__ import annotations

from PIL import Image

from ..images import load_image
from ..sources import BUILTIN_SOURCE_PREFIX, DATASET_SOURCE_PREFIX, GallerySource, builtin_image, open_source
from .store import VectorStore
from .types import INDEX_SOURCE_PREFIX, IndexFormatError, Item

SOURCE_ARGS = ("dataset", "config", "split", "revision", "image_column", "label_column")


class ItemImages:
    """Finds the images of one store's items; opens the store's dataset once, on the first dataset row asked for."""

    def __init__(self, store: VectorStore):
        self.store = store
        self._dataset: GallerySource | None = None

    def attach(self, source: GallerySource) -> None:
        """Use an already-open source for dataset rows instead of reopening it."""
        self._dataset = source

    def source_args(self) -> dict:
        """Arguments of sources.open_source that reopen the store's dataset."""
        return {key: self.store.source[key] for key in SOURCE_ARGS if self.store.source.get(key) is not None}

    def image(self, item: Item) -> Image.Image:
        """The image of `item`. Only ever opens the source recorded for that item."""
        pending = self.store.pending_image(item.id)
        if pending is not None:
            return pending
        source = item.source
        if source.startswith(INDEX_SOURCE_PREFIX):
            return self._stored(item)
        if source.startswith(BUILTIN_SOURCE_PREFIX):
            return builtin_image(source[len(BUILTIN_SOURCE_PREFIX):])
        if source.startswith(DATASET_SOURCE_PREFIX):
            if self._dataset is None:
                self._dataset = open_source(**self.source_args())
            return self._dataset.image_at(item.row)
        if not source:
            raise FileNotFoundError(f"Item {item.id} has no image source (it was added as a bare vector).")
        return load_image(source)

    def _stored(self, item: Item) -> Image.Image:
        """An image added with the index, from its directory's images/."""
        if self.store.path is None:
            raise FileNotFoundError(f"Item {item.id}'s image is stored with the index, which was never saved.")
        root = self.store.path.resolve()
        path = (root / item.source[len(INDEX_SOURCE_PREFIX):]).resolve()
        if root not in path.parents:
            raise IndexFormatError(f"Item {item.id} points outside its index directory ({item.source}).")
        with self.store.swap_lock:  # not while a save swaps the directory in (the file is briefly elsewhere)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise FileNotFoundError(f"Item {item.id}'s image {path} is missing ({exc.strerror}): "
                                        "restore the index directory or rebuild it.") from None
        return load_image(data)
