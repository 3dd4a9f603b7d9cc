"""Datasets as gallery sources: a hub dataset, a dataset saved with `datasets`, or parquet files, with an image
column (Image feature, or a column of paths) and optional labels."""
from __future__ import annotations

from pathlib import Path

from ..images import load_image
from .base import (AUTO, DATASET_SOURCE_PREFIX, IMAGE_COLUMN_NAMES, LABEL_COLUMN_NAMES, NONE, GallerySource, Record,
                   SourceError, SourceKind)


class DatasetSource(GallerySource):
    """A `datasets.Dataset` with an image column (Image feature, or a column of paths) and optional labels."""

    def __init__(self, ds, kind: SourceKind, dataset: str, config=None, split=None, revision=None,
                 image_column: str | None = AUTO, label_column: str | None = AUTO, base_dir: Path | None = None):
        import datasets  # heavy (~1 s): only when a dataset is opened

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
    import datasets  # heavy (~1 s): only when a dataset is opened

    is_text = lambda feature: getattr(feature, "dtype", None) in ("string", "large_string")  # noqa: E731
    column = _detect_column(features, requested or AUTO, datasets.Image, IMAGE_COLUMN_NAMES, is_text, "--image-column")
    if column is None:
        raise SourceError(f"No image column found (no Image feature, no column named {', '.join(IMAGE_COLUMN_NAMES[:4])}...); "
                          f"columns are {list(features)}: name it with --image-column.")
    return column


def detect_label_column(features, requested: str | None = AUTO, image_column: str | None = None) -> str | None:
    import datasets  # heavy (~1 s): only when a dataset is opened

    if requested is None or requested == NONE:
        return None
    names = [name for name in LABEL_COLUMN_NAMES if name != image_column]
    return _detect_column(features, requested, datasets.ClassLabel, names,
                          lambda feature: isinstance(feature, datasets.Value), "--label-column (or 'none')")
