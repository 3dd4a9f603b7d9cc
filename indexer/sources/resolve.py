"""open_source: the gallery source an ID_OR_PATH names ('builtin', an image folder, a saved dataset, parquet, a hub id)."""
from __future__ import annotations

import os
from pathlib import Path

from .base import AUTO, BUILTIN, GallerySource, SourceError, SourceKind, is_saved_dataset
from .builtin import BuiltinSource
from .dataset import DatasetSource
from .folder import FolderSource


def open_source(dataset: str | os.PathLike, config: str | None = None, split: str | None = None,
                revision: str | None = None, image_column: str | None = AUTO,
                label_column: str | None = AUTO) -> GallerySource:
    """Open ID_OR_PATH: 'builtin', an image folder, a saved dataset dir, a parquet file/dir, or a hub id."""
    import datasets  # heavy (~1 s): only when a source is opened

    name = str(dataset)
    if name == BUILTIN or name.startswith(BUILTIN + ":"):
        return BuiltinSource()
    path = Path(name).expanduser()
    if path.exists():
        path = path.resolve()
        common = dict(config=config, image_column=image_column, label_column=label_column)
        if is_saved_dataset(path):
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


def _pick_split(dsd, split: str | None, where: str):
    if split:
        if split not in dsd:
            raise SourceError(f"{where} has no split {split!r}; its splits are {list(dsd)}: use --split.")
        return dsd[split], split
    split = "train" if "train" in dsd else next(iter(dsd))
    return dsd[split], split


def _hub_sha(repo_id: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import HfApi  # a network client, for hub datasets only

        return HfApi().dataset_info(repo_id, revision=revision, timeout=5).sha
    except Exception:  # revision is informative only
        return None
