"""Files that readers see whole: the old contents or the new, never a half-written file."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write` fills a staging file beside `path` (same filesystem), which then replaces `path` in one rename.
    A failed or killed write leaves `path` as it was."""
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)  # still there only if writing or renaming failed


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries (a new or renamed file survives a crash only after this)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
