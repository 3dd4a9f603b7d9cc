"""An image folder as a gallery source: every image file under it, labelled by its sub-folder."""
from __future__ import annotations

from pathlib import Path

from ..images import load_image
from .base import AUTO, IMAGE_EXTENSIONS, NONE, GallerySource, Record, SourceError, SourceKind


class FolderSource(GallerySource):
    """Every image file under `root` (recursively, sorted). Label: the parent folder relative to root."""

    kind = SourceKind.FOLDER

    def __init__(self, root: Path, label_column: str | None = AUTO):
        self.root = root.resolve()
        self.files = sorted(
            p for p in self.root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        )
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
