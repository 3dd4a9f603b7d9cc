"""The first N rows of a (hub) dataset, streamed, kept as a local dataset: a gallery of a few thousand photos
from a dataset far larger, without downloading it whole.

    path = stream_head("timm/oxford-iiit-pet", "train", 2000, cache_dir)   # then build_index(path, ...)

Streaming reads the dataset's files only as far as the rows taken. The rows are written to `cache_dir` as a
dataset saved with `datasets` (random access for the gallery's thumbnails), with stream.json saying where they
came from; the next start finds them there and streams nothing. Local datasets (a folder of parquet files) stream
the same way, which is how the tests run it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .dataset import detect_image_column
from ..errors import UserInputError

STREAM_FILE = "stream.json"


@dataclass(frozen=True)
class StreamInfo:
    """Where a streamed gallery's rows came from (shown in the page as its name)."""

    dataset: str
    split: str
    rows: int  # rows kept (fewer than asked when the dataset is smaller)
    requested: int
    config: str | None = None


def stream_dir(cache_dir: str | os.PathLike, dataset: str, split: str, count: int, config: str | None = None) -> Path:
    key = hashlib.sha256(f"{dataset}|{config}|{split}|{count}".encode()).hexdigest()[:10]
    return Path(cache_dir) / f"{Path(dataset).name or 'dataset'}-{split}-{count}-{key}"


def stream_head(dataset: str, split: str, count: int, cache_dir: str | os.PathLike, config: str | None = None) -> Path:
    """A saved dataset of the first `count` rows of `dataset`'s `split`, streamed once and then reused."""
    import datasets  # heavy: only when a gallery is streamed

    if count < 1:
        raise UserInputError(f"The gallery size must be at least 1; got {count} (TWINSIGHT_GALLERY_SIZE).")
    target = stream_dir(cache_dir, dataset, split, count, config)
    if (target / STREAM_FILE).is_file():
        return target
    stream = datasets.load_dataset(dataset, config, split=split, streaming=True)
    image_column = detect_image_column(stream.features)
    # Undecoded: the rows keep the image files' bytes as they are, and the build decodes them in its workers.
    head = stream.cast_column(image_column, datasets.Image(decode=False)).take(count)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:  # written to disk as the rows arrive (not held in memory), then saved as one dataset
        rows = datasets.Dataset.from_generator(lambda: iter(head), features=head.features,
                                               cache_dir=str(staging / ".rows"))
        rows.cast_column(image_column, datasets.Image()).save_to_disk(str(staging))
        info = StreamInfo(dataset, split, len(rows), count, config)
        (staging / STREAM_FILE).write_text(json.dumps(asdict(info)))
        shutil.rmtree(staging / ".rows")
        staging.rename(target)  # complete or absent: a start killed mid-stream streams again next time
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def stream_info(path: str | os.PathLike | None) -> StreamInfo | None:
    """The StreamInfo of a streamed gallery's folder, or None for anything else."""
    try:
        return StreamInfo(**json.loads((Path(path) / STREAM_FILE).read_text()))
    except (OSError, TypeError, ValueError):
        return None
