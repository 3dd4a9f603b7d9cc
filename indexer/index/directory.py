"""The index directory on disk: meta.json, checksums, and atomic replacement of the whole directory.

Saving writes a sibling temp directory and renames it into place, so a crash mid-save leaves the previous index
loadable; `recover` brings the previous one back after a crash between the two renames. See docs/INDEX.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Iterator

from ..atomic import fsync_path
from ..errors import UserInputError
from .types import FORMAT, FORMAT_VERSION, META_FILE, HnswParams, IndexFormatError, Metric

log = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("hnswlib", "numpy", "pyarrow", "torch", "datasets", "open_clip_torch", "transformers", "pillow")


def save_target(path: str | os.PathLike | None, current: Path | None) -> Path:
    """Where save(path) writes: `path`, else the index's own directory. Neither is a mistake to refuse, not the
    working directory (Path("") is "."; a save there would swap the whole directory for the index)."""
    if path is None or str(path) == "":
        if current is None:
            raise UserInputError("Where should the index go? Pass save(path).")
        path = current
    return Path(path).absolute()


def meta_header(model: str, dim: int, params: HnswParams, max_elements: int) -> dict:
    """meta.json's first fields, the same for every store: format, model, metric and graph parameters."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "dim": dim,
        "metric": Metric.COSINE.value,
        "hnsw": {"M": params.M, "ef_construction": params.ef_construction, "ef": params.ef, "seed": params.seed,
                 "max_elements": max_elements},
    }


def library_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return versions


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(tmp: Path, meta: dict) -> str:
    """Checksum the files written into `tmp`, write meta.json and fsync it all; returns the overall checksum."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    checksums = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in files}
    meta = {**meta, "files": checksums,
            "checksum": hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    for p in files + [tmp / META_FILE]:
        fsync_path(p)
    return meta["checksum"]


def read_meta(path: str | os.PathLike) -> dict:
    path = Path(path).absolute()
    recover(path)
    file = path / META_FILE
    if not file.is_file():
        raise IndexFormatError(f"{path} is not a Twinsight index (no {META_FILE}); build one with "
                               f"`python -m indexer build --dataset ID_OR_PATH --out {path}`.")
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise IndexFormatError(f"{file} is not valid JSON ({exc}); rebuild the index.") from None
    if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise IndexFormatError(f"{path} holds format {meta.get('format')!r} v{meta.get('format_version')}; this "
                               f"Twinsight reads {FORMAT!r} up to v{FORMAT_VERSION}: upgrade Twinsight or rebuild.")
    if meta.get("metric") != Metric.COSINE.value:
        raise IndexFormatError(f"{path} uses metric {meta.get('metric')!r}; Twinsight indexes are cosine: rebuild.")
    return meta


@contextmanager
def writer_lock(target: Path) -> Iterator[None]:
    """An exclusive lock between processes writing the index at `target` (a sibling file: the directory itself
    is replaced by saves). Where there is no fcntl (Windows), processes are not locked out from each other."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


def backups(path: Path) -> Iterator[Path]:
    return path.parent.glob(f".{path.name}.old-*")


def replace_dir(tmp: Path, target: Path) -> None:
    """Put `tmp` in place of `target`. The old index is renamed aside first and only removed after the new
    one is in place; if we die between the two renames, `recover` restores the old one on the next load."""
    if target.exists():
        backup = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, backup)
        os.rename(tmp, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.rename(tmp, target)
    fsync_path(target.parent)


def remove_stale_temps(target: Path, older_than_s: float = 3600.0) -> None:
    """Temp directories of saves that crashed (an hour old: no live save takes that long)."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            if time.time() - stale.stat().st_mtime > older_than_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def recover(path: Path) -> None:
    """After a crash between the renames of `replace_dir`, bring the previous index back."""
    if (path / META_FILE).is_file():
        for stale in backups(path):
            shutil.rmtree(stale, ignore_errors=True)
        return
    for backup in sorted(backups(path), key=lambda p: p.stat().st_mtime, reverse=True):
        if (backup / META_FILE).is_file() and not path.exists():
            log.warning("restoring %s from %s (an earlier save was interrupted)", path, backup)
            os.rename(backup, path)
            return
