"""Labelled images for the trainer: (image, identity) from an image folder or a `datasets` dataset.

Image folder: the identity of an image is its folder path relative to the root, so Omniglot's
`ALPHABET/characterNN/drawing.png` works as it is. Datasets: saved to disk, parquet files, or a hub id,
with an image column (found automatically) and an identity column.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


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


def image_folder(root: str | Path) -> LabelledImages:
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    files = [p for p in files if p.parent != root]
    if not files:
        raise ValueError(f"No images in sub-folders of {root}; put each identity's images in its own folder.")
    identities = [p.parent.relative_to(root).as_posix() for p in files]
    return LabelledImages([str(p) for p in files], identities, f"image folder {root}")


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def load_labelled(dataset: str, identity_column: str | None = None, image_column: str | None = None, split: str = "train") -> LabelledImages:
    """Open `dataset` (folder, saved dataset, parquet file/folder, or hub id) as labelled images."""
    path = Path(dataset)
    if path.is_dir() and not _is_saved_dataset(path) and not any(path.glob("*.parquet")):
        return image_folder(path)
    import datasets

    if _is_saved_dataset(path):
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
            raise ValueError(f"No image column in {dataset} (columns: {list(features)}); pass --image-column.")
    if identity_column is None or identity_column not in features:
        raise ValueError(
            f"Pass --identity-column: one of {[c for c in features if c != image_column]} names who/what each image shows."
        )
    identities = [str(v) for v in ds[identity_column]]
    return LabelledImages(_Column(ds, image_column), identities, f"dataset {dataset} ({identity_column})")
