"""Benchmark 3: gallery search at scale, through the real GalleryIndex API.

    .venv/bin/python benchmarks/search.py [--sizes 100000 1000000] [--dim 512] [--efs 32 64 96 128 256] [--data realistic]

Clustered unit vectors (indexer.brute.clustered_unit_vectors, isotropic: a graph's worst case), queries drawn fresh
from the same clusters; or with --data realistic the generated set that behaves like real embeddings, with its
held-out queries (benchmarks/realistic.py: cached under /tmp/twinsight-realistic, made on first use). For
each size: build time, resident memory added by the index against the raw float32 size, then per ef the p50/p99
latency of one k=10 query and recall@10 against exact search; the ef that GalleryIndex.tune_ef picks (as every
build does) and the recall the fresh queries get with it; then Hamming mode (sign bits + cosine re-rank); last,
what making one addition durable costs: a full save against a commit (a journal append, as the app's "add to
gallery" does), and what a full journal adds to loading the index.
"""
from __future__ import annotations

import argparse
import gc
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.brute import clustered_unit_vectors, exact_search, recall_at_k  # noqa: E402
from indexer.index import GalleryIndex, HnswParams  # noqa: E402
from indexer.index.journal import JOURNAL_FILE  # noqa: E402
from scratch import disk_bytes  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def timed_queries(index: GalleryIndex, queries: np.ndarray, **options) -> tuple[np.ndarray, np.ndarray]:
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        hits = index.search(vector=q, k=10, **options)
        times.append(time.perf_counter() - start)
        found.append([h.id for h in hits])
    return np.array(found), np.array(times) * 1000


def build_index(vectors: np.ndarray, params: HnswParams) -> GalleryIndex:
    """A GalleryIndex of `vectors`, added 50,000 at a time as a build does."""
    index = GalleryIndex(vectors.shape[1], "benchmark", params=params, capacity=len(vectors))
    for lo in range(0, len(vectors), 50_000):
        index.add_vectors(vectors[lo : lo + 50_000])
    return index


def benchmark_set(data: str, n: int, dim: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(gallery, queries) of the chosen data: isotropic clusters, or the realistic generated set."""
    if data == "realistic":
        from realistic import load_set

        return load_set(n, dim, queries)
    return clustered_unit_vectors(n, dim, seed=0), clustered_unit_vectors(queries, dim, seed=99)


def add_and_persist(index: GalleryIndex, trials: int) -> str:
    """One addition made durable, `trials` times each way: save() (every file rewritten, checksummed, fsynced,
    swapped in) and commit() (one journal record appended and fsynced). Then loading with a full journal
    (journal_limit items, one commit each, as the app adds them) against loading the folded index."""
    import tempfile

    def add_one(seed: int) -> None:
        index.add_vectors(clustered_unit_vectors(1, index.dim, seed=seed))

    def timed(action) -> float:
        start = time.perf_counter()
        action()
        return time.perf_counter() - start

    lines = ["| one addition, then | median s | each s | written |", "| --- | ---: | --- | ---: |"]
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1].parent) as folder:
        path = Path(folder) / "index"
        saves = []
        for i in range(trials):
            add_one(1000 + i)
            saves.append(timed(lambda: index.save(path)))
        size = disk_bytes(path)
        commits = []
        for i in range(trials):
            add_one(2000 + i)
            commits.append(timed(index.commit))
        record = (path / JOURNAL_FILE).stat().st_size / trials
        for name, times, written in (("save()", saves, f"{size / 2**20:,.0f} MiB"),
                                     ("commit()", commits, f"{record / 1024:.1f} KiB")):
            lines.append(f"| {name} | {np.median(times):.4f} | {', '.join(f'{x:.4f}' for x in times)} | {written} |")
        for i in range(index.journal_limit - trials):  # fill the journal as the app would, one addition at a time
            add_one(3000 + i)
            index.commit()
        with_journal = Path(folder) / "journalled"
        shutil.copytree(path, with_journal)
        index.save()  # folds the journal
        loads: dict[Path, list[float]] = {path: [], with_journal: []}
        for _ in range(3):  # alternating, so both see the same machine
            for directory, times in loads.items():
                times.append(timed(lambda: GalleryIndex.load(directory)))
        folded, journalled = np.median(loads[path]), np.median(loads[with_journal])
    lines.append(f"load (checksums verified, median of 3): {folded:.2f} s folded, {journalled:.2f} s with a full journal "
                 f"({index.journal_limit} items replayed, +{(journalled - folded) / index.journal_limit * 1000:.2f} ms each)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--efs", type=int, nargs="+", default=[32, 64, 96, 128, 256])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--data", choices=["isotropic", "realistic"], default="isotropic",
                        help="isotropic clusters (the worst case) or the set generated to behave like real embeddings")
    parser.add_argument("--save-trials", type=int, default=3, help="additions saved, and as many committed, timed at the end")
    parser.add_argument("--M", type=int, default=HnswParams.M)
    parser.add_argument("--ef-construction", type=int, default=HnswParams.ef_construction)
    parser.add_argument("--keep", type=Path, default=None,
                        help="save each built index under this folder and load it on the next run (ef sweeps "
                             "at 1M without another 17-minute graph build)")
    args = parser.parse_args()
    for n in args.sizes:
        gc.collect()
        vectors, queries = benchmark_set(args.data, n, args.dim, args.queries)
        truth, _ = exact_search(queries, vectors, 10)
        raw = vectors.nbytes
        name = f"{n}-{args.dim}-M{args.M}-efc{args.ef_construction}"
        kept = args.keep / (name if args.data == "isotropic" else f"{args.data}-{name}") if args.keep else None
        before = rss_bytes()
        start = time.perf_counter()
        if kept is not None and kept.is_dir():
            index, how = GalleryIndex.load(kept, verify=False), "loaded"
        else:
            index, how = build_index(vectors, HnswParams(M=args.M, ef_construction=args.ef_construction)), "build"
        seconds = time.perf_counter() - start
        added = rss_bytes() - before
        print(f"\n## {n:,} x {args.dim}-d {args.data} (M={args.M}, ef_construction={args.ef_construction})")
        print(f"{how} {seconds:.1f} s ({n / seconds:,.0f} vectors/s); memory added {added / 2**20:,.0f} MiB "
              f"= {added / raw:.2f}x the raw float32 ({raw / 2**20:,.0f} MiB)", flush=True)
        if kept is not None and how == "build":
            index.save(kept)
        print("| search | p50 ms | p99 ms | recall@10 |\n| --- | ---: | ---: | ---: |")
        for ef in args.efs:
            index.ef = ef
            found, ms = timed_queries(index, queries)
            print(f"| hnsw ef={ef} | {np.percentile(ms, 50):.3f} | {np.percentile(ms, 99):.3f} | {recall_at_k(found, truth):.4f} |", flush=True)
        index.ef = HnswParams.ef
        start = time.perf_counter()
        tuning = index.tune_ef()  # what a build settles on (indexer.build): estimated on probes, checked on the queries
        tuned = time.perf_counter() - start
        found, ms = timed_queries(index, queries)
        print(f"| hnsw ef={tuning.ef}, tuned to estimated recall {tuning.recall:.4f} in {tuned:.1f} s | {np.percentile(ms, 50):.3f} | "
              f"{np.percentile(ms, 99):.3f} | {recall_at_k(found, truth):.4f} |", flush=True)
        found, ms = timed_queries(index, queries[:200], exact=True)
        print(f"| exact (brute force) | {np.percentile(ms, 50):.3f} | {np.percentile(ms, 99):.3f} | {recall_at_k(found, truth[:200]):.4f} |")
        index.enable_hamming("sign")
        for rerank in (100, 500):
            found, ms = timed_queries(index, queries[:200], metric="hamming", rerank=rerank)
            print(f"| hamming sign bits, re-rank {rerank} | {np.percentile(ms, 50):.3f} | {np.percentile(ms, 99):.3f} | {recall_at_k(found, truth[:200]):.4f} |")
        memory = index.memory_bytes()
        print(f"binary codes {memory['hamming'] / 2**20:.1f} MiB against float32 vectors {memory['float32'] / 2**20:.1f} MiB "
              f"({memory['float32'] / max(1, memory['hamming']):.0f}x smaller)")
        print(add_and_persist(index, args.save_trials))
        del index, vectors
    

if __name__ == "__main__":
    main()
