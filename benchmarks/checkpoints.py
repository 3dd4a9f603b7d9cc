"""What a build's checkpoints cost as the index grows: a full save each time, against the build's checkpoint
(a journal commit that folds into a full save once it passes a quarter of the index).

    .venv/bin/python benchmarks/checkpoints.py [--size 100000] [--dim 512] [--every 2400]

Adds `--size` clustered unit vectors in chunks of `--every` (a 30 s checkpoint at ~80 images/s) to two indexes,
checkpointing after each chunk, one way each, alternating chunk by chunk so both see the same machine. Prints the
time spent adding and checkpointing, the full saves, the bytes written, and what loading each final checkpoint
costs (the journal is replayed). No model: the embedding a real build does between checkpoints is left out.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import disk_bytes, scratch_dir  # noqa: E402

from indexer.build import pipeline as build_module  # noqa: E402
from indexer.index.hnsw_files import HnswFiles  # noqa: E402
from indexer.index import journal  # noqa: E402
from indexer.brute import clustered_unit_vectors  # noqa: E402
from indexer.index import GalleryIndex  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--every", type=int, default=2400, help="items between checkpoints")
    args = parser.parse_args()
    folder = scratch_dir()
    ways = {"save every checkpoint": "save", "build checkpoint (journal)": "journal"}
    indexes = {name: GalleryIndex(args.dim, "benchmark", capacity=args.size) for name in ways}
    paths = {name: folder / way for name, way in ways.items()}
    spent = {name: {"add": 0.0, "checkpoint": 0.0, "written": 0, "saves": 0, "slowest": 0.0} for name in ways}
    real_save = HnswFiles._save

    def counted_save(self, target):
        name = next(n for n, ix in indexes.items() if ix.store is self.store)
        spent[name]["saves"] += 1
        saved = real_save(self, target)
        spent[name]["written"] += disk_bytes(saved)
        return saved

    HnswFiles._save = counted_save
    for lo in range(0, args.size, args.every):
        chunk = clustered_unit_vectors(min(args.every, args.size - lo), args.dim, seed=lo)
        for name, index in indexes.items():
            start = time.perf_counter()
            index.add_vectors(chunk)
            spent[name]["add"] += time.perf_counter() - start
            report = build_module.BuildReport(paths[name], args.size, len(index), len(index), 0, 0, 0.0)
            journal_before = journal.size(paths[name] / journal.JOURNAL_FILE)
            start = time.perf_counter()
            if ways[name] == "save":
                index.extra["last_build"] = build_module._report_dict(report)
                index.save(paths[name])
            else:
                build_module._checkpoint(index, paths[name], report)  # what build_index does
            took = time.perf_counter() - start
            spent[name]["checkpoint"] += took
            spent[name]["slowest"] = max(spent[name]["slowest"], took)
            journal_after = journal.size(paths[name] / journal.JOURNAL_FILE)
            spent[name]["written"] += max(0, journal_after - journal_before)
        print(f"{lo + len(chunk):,} items: " + ", ".join(f"{n}: {s['checkpoint']:.1f} s" for n, s in spent.items()),
              flush=True)
    HnswFiles._save = real_save
    checkpoints = -(-args.size // args.every)
    print(f"\n## {args.size:,} x {args.dim}-d, a checkpoint every {args.every:,} items ({checkpoints} checkpoints)")
    print("| checkpoints | adding s | checkpointing s | slowest checkpoint s | full saves | written GiB | load the last checkpoint s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, s in spent.items():
        start = time.perf_counter()
        GalleryIndex.load(paths[name])
        load = time.perf_counter() - start
        print(f"| {name} | {s['add']:.1f} | {s['checkpoint']:.1f} | {s['slowest']:.2f} | {s['saves']} | "
              f"{s['written'] / 2**30:.2f} | {load:.2f} |")


if __name__ == "__main__":
    main()
