"""What every gallery source is: a stream of `Record(row, image, label, source)` that can also give back the image of
any of its rows. Sources: a hub dataset, a dataset saved with `datasets`, a parquet file, an image folder, or the
built-in gallery (indexer/sources/).

Images are handed out undecoded (bytes or a path) so that decoding runs in the build's worker threads.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from ..errors import UserInputError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
IMAGE_COLUMN_NAMES = ("image", "img", "picture", "photo", "image_path", "path", "file", "filepath", "file_name")
LABEL_COLUMN_NAMES = ("label", "labels", "class", "category", "fine_label", "coarse_label", "name", "alphabet")
SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
AUTO, NONE = "auto", "none"
BUILTIN = "builtin"
# The describe() keys that say which source an index holds: a build resumes, and a Milvus collection is shared,
# only between builds of the same source.
SOURCE_IDENTITY = ("kind", "dataset", "config", "split", "image_column", "label_column")
# How an item's `source` names where its image is (besides a file path, and the index's own images/).
DATASET_SOURCE_PREFIX = "dataset:"  # a row of the index's dataset
BUILTIN_SOURCE_PREFIX = "builtin:"  # an image of the built-in offline gallery


class SourceKind(str, enum.Enum):
    HUB = "hub"
    SAVED = "saved"  # datasets.Dataset.save_to_disk
    PARQUET = "parquet"
    FOLDER = "folder"
    BUILTIN = "builtin"


class SourceError(UserInputError):
    """The dataset or folder cannot be used as a gallery; the message says how to fix it."""


@dataclass(frozen=True)
class Record:
    row: int  # position in the source (dataset row, or index in the sorted file list)
    image: Any  # bytes, path, PIL image or array (anything images.load_image accepts), or a callable giving one
    label: str | None
    source: str  # what the index stores to find the image again


class GallerySource(ABC):
    kind: SourceKind

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def records(self, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        """Records of rows [start, stop) in row order."""

    @abstractmethod
    def image_at(self, row: int) -> Image.Image: ...

    @abstractmethod
    def describe(self) -> dict:
        """JSON-able description for meta.json; its open_source keys reopen the same source."""


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `datasets`' save_to_disk (a Dataset or a DatasetDict)."""
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_DATASET_MARKERS)
