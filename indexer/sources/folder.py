"""An image folder as a gallery source: every image file under it, labelled by its sub-folder."""
from __future__ import annotations

import os
from pathlib import Path

from ..images import load_image
from .base import AUTO, IMAGE_EXTENSIONS, NONE, GallerySource, Record, SourceError, SourceKind


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
