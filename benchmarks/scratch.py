"""Scratch space for a benchmark run: removed when the run ends (a 100k-item index alone is ~200 MB)."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def scratch_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="twinsight-bench-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)  # also after an exception or Ctrl-C
    return path
