"""Where indexes go by default: a cache directory keyed by model and source (and store)."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ..config import settings
from ..index import HNSW, StoreSpec
from ..sources import SOURCE_IDENTITY, SourceKind

DEFAULT_INDEX_ROOT_ENV = "TWINSIGHT_INDEX_DIR"


# Hugging Face Spaces mount persistent storage here; everything else in a Space is lost on restart.
PERSISTENT_DATA_DIR = Path("/data")


def default_index_root(persistent_dir: Path | None = None) -> Path:
    """$TWINSIGHT_INDEX_DIR; else /data/twinsight/indexes when /data (Spaces persistent storage) exists and is
    writable; else ~/.cache/twinsight/indexes."""
    if settings().index_dir:
        return Path(settings().index_dir)
    persistent_dir = PERSISTENT_DATA_DIR if persistent_dir is None else persistent_dir
    if persistent_dir.is_dir() and os.access(persistent_dir, os.W_OK | os.X_OK):
        return persistent_dir / "twinsight" / "indexes"
    return Path.home() / ".cache" / "twinsight" / "indexes"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:] or "x"


def index_dir_for(model: str, source: dict, root: str | os.PathLike | None = None, store: StoreSpec | None = None) -> Path:
    """Cache directory of the index of `source` (a GallerySource.describe()) embedded by `model` (into `store`)."""
    identity = "|".join(str(source.get(key)) for key in SOURCE_IDENTITY)
    if store is not None and store.kind != HNSW:
        identity += f"|{store}"
    digest = hashlib.sha256(f"{model}|{identity}".encode()).hexdigest()[:10]
    name = _slug(Path(str(source.get("dataset"))).name if source.get("kind") == SourceKind.FOLDER.value else str(source.get("dataset")))
    if source.get("split"):
        name += f"-{_slug(source['split'])}"
    return Path(root or default_index_root()) / _slug(model) / f"{name}-{digest}"
