"""Identity-labelled images for the Siamese trainers: (image, identity) from an image folder or a `datasets` dataset.

Image folder: an image's identity is its folder path relative to the root (Omniglot's ALPHABET/characterNN works as
it is); the folder walk is the gallery's (`image_files`: symlinked folders followed). Datasets: saved to disk,
parquet files, or a hub id, with an image column (found automatically) and an identity column.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserInputError
from .base import is_saved_dataset
from .folder import image_files

@dataclass
class LabelledImages:
    images: Sequence[Any]  # paths, or PIL images decoded lazily from a dataset
    identities: list[str]
    description: str

    def __len__(self) -> int:
        return len(self.identities)


class _Column(Sequence):
    """Lazy view of one column of a `datasets.Dataset` (images are decoded on access)."""

    def __init__(self, dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[int(index)][self.column]


def image_folder(root: str | Path, dedupe: bool = True) -> LabelledImages:
    """Identity of an image = its folder path relative to `root` (Omniglot's ALPHABET/characterNN works as it
    is). dedupe: a file whose bytes another file already has is used once (Omniglot's two background sets
    share Greek and Latin), and an identity left without images disappears."""
    root = Path(root)
    files = [p for p in image_files(root) if p.parent != root]
    if not files:
        raise UserInputError(f"No images in sub-folders of {root}; put each identity's images in its own folder.")
    kept, seen = [], set()
    for path in files:
        digest = hashlib.blake2b(path.read_bytes(), digest_size=16).digest() if dedupe else path
        if digest not in seen:
            seen.add(digest)
            kept.append(path)
    identities = [p.parent.relative_to(root).as_posix() for p in kept]
    duplicates = f", {len(files) - len(kept)} duplicate files skipped" if len(kept) < len(files) else ""
    return LabelledImages([str(p) for p in kept], identities, f"image folder {root}{duplicates}")


def load_labelled(dataset: str, identity_column: str | None = None, image_column: str | None = None, split: str = "train") -> LabelledImages:
    """Open `dataset` (folder, saved dataset, parquet file/folder, or hub id) as identity-labelled images."""
    path = Path(dataset)
    if path.is_dir() and not is_saved_dataset(path) and not any(path.glob("*.parquet")):
        return image_folder(path)
    import datasets

    if is_saved_dataset(path):
        ds = datasets.load_from_disk(str(path))
    elif path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        files = [str(path)] if path.is_file() else sorted(str(p) for p in path.glob("*.parquet"))
        ds = datasets.load_dataset("parquet", data_files=files)
    else:
        ds = datasets.load_dataset(dataset)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[split] if split in ds else ds[next(iter(ds))]
    features = ds.features
    if image_column is None:
        image_column = next((name for name, f in features.items() if isinstance(f, datasets.Image)), None)
        if image_column is None:
            raise UserInputError(f"No image column in {dataset} (columns: {list(features)}); pass --image-column.")
    if identity_column is None or identity_column not in features:
        raise UserInputError(
            f"Pass --identity-column: one of {[c for c in features if c != image_column]} names who/what each image shows."
        )
    identities = [str(v) for v in ds[identity_column]]
    return LabelledImages(_Column(ds, image_column), identities, f"dataset {dataset} ({identity_column})")
