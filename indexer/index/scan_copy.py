"""The float16 copy of the vectors that exact and label-filtered searches scan, kept out of the process's memory.

hnswlib holds every vector in float32 and its Python API cannot hand them back fast enough to scan (`get_items`
costs ~37 us a vector: 3.7 s for 100k), so exact scans need a copy of their own. Held in memory it added half the
vectors' size to the index (1.75x the raw float32 vectors in all). Instead, the rows of the last full save are the
saved `vectors.npy`, memory-mapped copy-on-write: the OS pages them in on the first scan and may drop them under
memory pressure (page cache, not the process's own memory), and the rows added since that save sit in memory in
`tail` until the next save maps them too. docs/BENCHMARKS.md (section 10) has the memory and the latency it costs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SCAN_DTYPE = np.float16


class ScanCopy:
    """float16 rows, one per item position: rows [0, mapped) are the memory-mapped save, the rest `tail`.

    Writes to a mapped row (a deletion moves the last row into the hole) land in a private copy of its page: the
    file is never written. On Linux and macOS a mapped file that a later save replaces stays readable until it is
    re-mapped (the old inode lives on), so saves may swap the index directory under a mapping.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.count = 0
        self._mapped = np.zeros((0, dim), dtype=SCAN_DTYPE)  # the memory-mapped rows of the last save
        self._tail = np.zeros((0, dim), dtype=SCAN_DTYPE)  # capacity rows; rows count - len(_mapped) are items

    def __len__(self) -> int:
        return self.count

    @property
    def mapped_rows(self) -> int:
        """How many rows are read from the mapped save (the rest are in memory)."""
        return min(len(self._mapped), self.count)

    @property
    def mapped_file(self) -> str | None:
        """The file the mapped rows are read from (None: every row is in memory)."""
        name = getattr(self._mapped, "filename", None) if self.mapped_rows else None
        return None if name is None else str(name)

    def memory_bytes(self) -> int:
        """Bytes this copy holds in the process's memory (the tail's capacity); mapped rows are not counted."""
        return self._tail.nbytes

    # -- reading -----------------------------------------------------------------------------------
    def parts(self) -> list[np.ndarray]:
        """The live rows as (at most) two arrays, mapped then in-memory, without copying them."""
        mapped = self.mapped_rows
        return [part for part in (self._mapped[:mapped], self._tail[: self.count - mapped]) if len(part)]

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The rows at these positions (a copy)."""
        positions = np.asarray(positions, dtype=np.int64)
        mapped = self.mapped_rows
        out = np.empty((len(positions), self.dim), dtype=SCAN_DTYPE)
        low = positions < mapped
        out[low] = self._mapped[positions[low]]
        out[~low] = self._tail[positions[~low] - mapped]
        return out

    def all_rows(self) -> np.ndarray:
        """Every live row in one array (a copy: for fitting Hamming codes, not for searches)."""
        parts = self.parts()
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=SCAN_DTYPE)

    # -- changes -----------------------------------------------------------------------------------
    def append(self, vectors: np.ndarray) -> None:
        """Add rows at the end, in memory (grown by doubling)."""
        n, used = len(vectors), self.count - self.mapped_rows
        if used + n > len(self._tail):
            grown = np.zeros((max(used + n, 2 * len(self._tail), 64), self.dim), dtype=SCAN_DTYPE)
            grown[:used] = self._tail[:used]
            self._tail = grown
        self._tail[used : used + n] = vectors
        self.count += n

    def move(self, source: int, target: int) -> None:
        """Copy row `source` over row `target`."""
        value = self.rows(np.array([source]))[0]
        mapped = self.mapped_rows
        if target < mapped:
            self._mapped[target] = value
        else:
            self._tail[target - mapped] = value

    def pop(self) -> None:
        """Drop the last row."""
        self.count -= 1
        if self.count < len(self._mapped):  # the mapped part shrank: nothing in the tail any more
            self._mapped = self._mapped[: self.count]

    # -- files -------------------------------------------------------------------------------------
    def save(self, file: Path) -> None:
        """Write the live rows as a float16 .npy (no pickle), streaming the mapped part from its file."""
        out = np.lib.format.open_memmap(file, mode="w+", dtype=SCAN_DTYPE, shape=(self.count, self.dim))
        start = 0
        for part in self.parts():
            out[start : start + len(part)] = part
            start += len(part)
        out.flush()
        del out

    def map(self, file: Path, in_memory: bool = False) -> None:
        """Read every row from this saved .npy from now on: the file must hold exactly the live rows (after a
        load, or a save with no change since). in_memory (TWINSIGHT_SCAN_COPY=memory), or a float32 file (indexes
        saved before the float16 copy): the rows are read into memory instead."""
        saved = np.load(file, mmap_mode="r" if in_memory else "c", allow_pickle=False)
        if saved.ndim != 2 or saved.shape[1] != self.dim:
            raise ValueError(f"{file} holds vectors of shape {saved.shape}, not (n, {self.dim})")
        empty = np.zeros((0, self.dim), dtype=SCAN_DTYPE)
        self._mapped, self._tail, self.count = empty, empty, 0
        if saved.dtype == SCAN_DTYPE and not in_memory:
            self._mapped, self.count = saved, len(saved)
        else:
            self.append(np.asarray(saved, dtype=SCAN_DTYPE))
