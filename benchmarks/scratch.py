"""Scratch space for a benchmark run: removed when the run ends (a 100k-item index alone is ~200 MB); and what a
run wrote there."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def scratch_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="twinsight-bench-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)  # also after an exception or Ctrl-C
    return path


def disk_bytes(path: Path) -> int:
    """The size of a file, or of all the files under a directory."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
