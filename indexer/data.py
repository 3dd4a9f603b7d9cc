"""Gallery sources: a hub dataset, a dataset saved with `datasets`, a parquet file, an image folder or the
built-in gallery, all read as one stream of `Record(row, image, label, source)`.

Images are handed out undecoded (bytes or a path) so that decoding runs in the build's worker threads.
"""
from __future__ import annotations

import enum
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from PIL import Image

from .images import load_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
IMAGE_COLUMN_NAMES = ("image", "img", "picture", "photo", "image_path", "path", "file", "filepath", "file_name")
LABEL_COLUMN_NAMES = ("label", "labels", "class", "category", "fine_label", "coarse_label", "name", "alphabet")
SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
AUTO, NONE = "auto", "none"
BUILTIN = "builtin"


class SourceKind(str, enum.Enum):
    HUB = "hub"
    SAVED = "saved"  # datasets.Dataset.save_to_disk
    PARQUET = "parquet"
    FOLDER = "folder"
    BUILTIN = "builtin"


class SourceError(ValueError):
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


def image_files(root: Path) -> list[Path]:
    """Every image file under `root`, sorted, following symlinked folders (Path.rglob does not on Python 3.11,
    so a folder of symlinked sub-folders looked empty); hidden files and folders are skipped, and a symlink
    back to a folder above is not followed (a loop)."""
    root = Path(root)
    files = []
    above: dict[str, set[str]] = {str(root): set()}  # real paths of each walked folder and the folders above it
    for folder, subfolders, names in os.walk(root, followlinks=True):
        chain = above.pop(folder) | {os.path.realpath(folder)}
        subfolders[:] = sorted(name for name in subfolders
                               if not name.startswith(".") and os.path.realpath(os.path.join(folder, name)) not in chain)
        above.update({os.path.join(folder, name): chain for name in subfolders})
        files += [Path(folder) / name for name in names
                  if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(folder, name))]
    return sorted(files)


class FolderSource(GallerySource):
    """Every image file under `root` (recursively, sorted). Label: the parent folder relative to root."""

    kind = SourceKind.FOLDER

    def __init__(self, root: Path, label_column: str | None = AUTO):
        self.root = root.resolve()
        self.files = image_files(self.root)
        if not self.files:
            raise SourceError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {self.root}.")
        self.with_labels = label_column != NONE

    def __len__(self) -> int:
        return len(self.files)

    def label_of(self, path: Path) -> str | None:
        parent = path.parent.relative_to(self.root).as_posix()
        return parent if self.with_labels and parent != "." else None

    def records(self, start=0, stop=None):
        for row in range(start, min(stop if stop is not None else len(self), len(self))):
            path = self.files[row]
            yield Record(row, path, self.label_of(path), str(path))

    def image_at(self, row):
        return load_image(self.files[row])

    def describe(self):
        return {"kind": self.kind.value, "dataset": str(self.root), "label_column": None if self.with_labels else NONE,
                "num_rows": len(self)}


class DatasetSource(GallerySource):
    """A `datasets.Dataset` with an image column (Image feature, or a column of paths) and optional labels."""

    def __init__(self, ds, kind: SourceKind, dataset: str, config=None, split=None, revision=None,
                 image_column: str | None = AUTO, label_column: str | None = AUTO, base_dir: Path | None = None):
        import datasets

        self.kind, self.dataset, self.config, self.split, self.revision = kind, dataset, config, split, revision
        self.base_dir = base_dir
        self.revision_sha: str | None = None  # the commit a hub dataset resolved to (informative)
        self.image_column = detect_image_column(ds.features, image_column)
        self.label_column = detect_label_column(ds.features, label_column, self.image_column)
        feature = ds.features[self.image_column]
        self.is_image_feature = isinstance(feature, datasets.Image)
        if self.is_image_feature:  # hand out bytes; decoding happens in the worker threads
            ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
        label_feature = ds.features.get(self.label_column) if self.label_column else None
        self._names = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
        self.ds = ds
        self.fingerprint = getattr(ds, "_fingerprint", None)
        self.ref = dataset + (f"/{config}" if config else "") + (f"[{split}]" if split else "")

    def __len__(self):
        return len(self.ds)

    def _label(self, value) -> str | None:
        if value is None:
            return None
        if self._names is not None:
            return self._names[int(value)] if 0 <= int(value) < len(self._names) else None
        return str(value)

    def _image(self, value):
        if self.is_image_feature:
            if value is None:
                return None
            if value.get("bytes"):
                return value["bytes"]
            value = value.get("path")
        if value is None:
            return None
        path = Path(value)
        return path if path.is_absolute() or self.base_dir is None else self.base_dir / path

    def records(self, start=0, stop=None, chunk=64):
        from .index import DATASET_SOURCE_PREFIX

        stop = min(stop if stop is not None else len(self), len(self))
        if start >= stop:
            return
        columns = [self.image_column] + ([self.label_column] if self.label_column else [])
        part = self.ds.select_columns(columns).select(range(start, stop))
        row = start
        for batch in part.iter(batch_size=chunk):
            labels = batch[self.label_column] if self.label_column else [None] * len(batch[self.image_column])
            for image, label in zip(batch[self.image_column], labels):
                yield Record(row, self._image(image), self._label(label), f"{DATASET_SOURCE_PREFIX}{self.ref}#{row}")
                row += 1

    def image_at(self, row):
        image = self._image(self.ds[int(row)][self.image_column])
        return load_image(image)

    def describe(self):
        return {"kind": self.kind.value, "dataset": self.dataset, "config": self.config, "split": self.split,
                "revision": self.revision, "revision_sha": self.revision_sha, "fingerprint": self.fingerprint, "image_column": self.image_column,
                "label_column": self.label_column or NONE, "num_rows": len(self)}


def _detect_column(features, requested: str, feature_type, names, accepts, option: str) -> str | None:
    """The requested column (checked), else the first column of `feature_type`, else the first of `names`
    whose feature `accepts`; None if nothing fits."""
    if requested != AUTO:
        if requested not in features:
            raise SourceError(f"No column {requested!r}; columns are {list(features)}: pick one with {option}.")
        return requested
    for name, feature in features.items():
        if isinstance(feature, feature_type):
            return name
    return next((name for name in names if name in features and accepts(features[name])), None)


def detect_image_column(features, requested: str | None = AUTO) -> str:
    import datasets

    is_text = lambda feature: getattr(feature, "dtype", None) in ("string", "large_string")  # noqa: E731
    column = _detect_column(features, requested or AUTO, datasets.Image, IMAGE_COLUMN_NAMES, is_text, "--image-column")
    if column is None:
        raise SourceError(f"No image column found (no Image feature, no column named {', '.join(IMAGE_COLUMN_NAMES[:4])}...); "
                          f"columns are {list(features)}: name it with --image-column.")
    return column


def detect_label_column(features, requested: str | None = AUTO, image_column: str | None = None) -> str | None:
    import datasets

    if requested is None or requested == NONE:
        return None
    names = [name for name in LABEL_COLUMN_NAMES if name != image_column]
    return _detect_column(features, requested, datasets.ClassLabel, names,
                          lambda feature: isinstance(feature, datasets.Value), "--label-column (or 'none')")


def _pick_split(dsd, split: str | None, where: str):
    if split:
        if split not in dsd:
            raise SourceError(f"{where} has no split {split!r}; its splits are {list(dsd)}: use --split.")
        return dsd[split], split
    split = "train" if "train" in dsd else next(iter(dsd))
    return dsd[split], split


def open_source(dataset: str | os.PathLike, config: str | None = None, split: str | None = None,
                revision: str | None = None, image_column: str | None = AUTO,
                label_column: str | None = AUTO) -> GallerySource:
    """Open ID_OR_PATH: 'builtin', an image folder, a saved dataset dir, a parquet file/dir, or a hub id."""
    import datasets

    name = str(dataset)
    if name == BUILTIN or name.startswith(BUILTIN + ":"):
        from .gallery import BuiltinSource

        return BuiltinSource()
    path = Path(name).expanduser()
    if path.exists():
        path = path.resolve()
        common = dict(config=config, image_column=image_column, label_column=label_column)
        if path.is_dir() and any((path / marker).is_file() for marker in SAVED_DATASET_MARKERS):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                loaded, split = _pick_split(loaded, split, str(path))
            return DatasetSource(loaded, SourceKind.SAVED, str(path), split=split, base_dir=path, **common)
        parquet = [path] if path.is_file() else sorted(path.glob("*.parquet"))
        if path.suffix == ".parquet" or (path.is_dir() and parquet and len(parquet) == len(list(path.iterdir()))):
            loaded = datasets.Dataset.from_parquet([str(p) for p in parquet])
            return DatasetSource(loaded, SourceKind.PARQUET, str(path), base_dir=path if path.is_dir() else path.parent, **common)
        if path.is_dir():
            return FolderSource(path, label_column)
        raise SourceError(f"{path} is neither an image folder, a saved dataset, nor a .parquet file.")
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise SourceError(f"{name} does not exist: check the path (or give a hub dataset id like ORG/NAME).")
    try:
        loaded = datasets.load_dataset(name, config, split=split, revision=revision)
    except Exception as exc:
        raise SourceError(f"Could not load hub dataset {name!r} ({type(exc).__name__}: {exc}); check the id, "
                          "--config and --split, and that the hub is reachable (or use a local path).") from exc
    if isinstance(loaded, datasets.DatasetDict):
        loaded, split = _pick_split(loaded, split, name)
    source = DatasetSource(loaded, SourceKind.HUB, name, config, split, revision, image_column, label_column)
    source.revision_sha = _hub_sha(name, revision)
    return source


def _hub_sha(repo_id: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo_id, revision=revision, timeout=5).sha
    except Exception:  # revision is informative only
        return None


# -- identity-labelled images (Siamese training) -------------------------------------------------------------
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
    import hashlib

    root = Path(root)
    files = [p for p in image_files(root) if p.parent != root]
    if not files:
        raise ValueError(f"No images in sub-folders of {root}; put each identity's images in its own folder.")
    kept, seen = [], set()
    for path in files:
        digest = hashlib.blake2b(path.read_bytes(), digest_size=16).digest() if dedupe else path
        if digest not in seen:
            seen.add(digest)
            kept.append(path)
    identities = [p.parent.relative_to(root).as_posix() for p in kept]
    duplicates = f", {len(files) - len(kept)} duplicate files skipped" if len(kept) < len(files) else ""
    return LabelledImages([str(p) for p in kept], identities, f"image folder {root}{duplicates}")


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in SAVED_DATASET_MARKERS)


def load_labelled(dataset: str, identity_column: str | None = None, image_column: str | None = None, split: str = "train") -> LabelledImages:
    """Open `dataset` (folder, saved dataset, parquet file/folder, or hub id) as identity-labelled images."""
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
