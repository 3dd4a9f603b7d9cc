"""Benchmark 10: the memory a loaded hnswlib index takes, and what exact and label-filtered searches cost, with the
float16 scan copy memory-mapped (the default) or read into RAM (TWINSIGHT_SCAN_COPY=memory).

    .venv/bin/python benchmarks/index_memory.py --size 100000 --dim 512 --out /tmp/twinsight-memory
    .venv/bin/python benchmarks/index_memory.py --index /tmp/ix-1m          # an index saved earlier (e.g. search.py --keep)
    .venv/bin/python benchmarks/index_memory.py --index DIR --before ../old-checkout   # + another checkout's code

Builds (or takes) a saved index, then measures each layout in a fresh process: resident memory added by the load
(anonymous, i.e. the process's own, and file-backed, i.e. mapped pages), against the raw float32 vectors; the first
exact search with the scan copy's pages evicted from the page cache (cold) and then warm exact and label-filtered
searches (p50/p99 over --queries); resident memory after the scans. Items get labels c0..c99 and folder-like
sources, as a built gallery has.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = 100

MEASURE = r"""
import json, os, sys, time
import numpy as np

def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmRSS"):
            fields[key] = int(value.split()[0]) * 1024
    return fields

def evict(path):  # drop the file's pages from the page cache: the next scan reads the disk
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)

index_dir, queries_file, label = sys.argv[1], sys.argv[2], sys.argv[3]
queries = np.load(queries_file, allow_pickle=False)
import tempfile
from indexer.index import GalleryIndex

# Warm up on a tiny index, so the baseline already holds the libraries and pools a load and a search bring in
# (torch, pyarrow, hnswlib): only the index itself is counted.
with tempfile.TemporaryDirectory() as tiny:
    warm = GalleryIndex(queries.shape[1], "warm-up")
    warm.add_vectors(queries[:50], labels=["c7"] * len(queries[:50]))
    warm.save(tiny)
    warm = GalleryIndex.load(tiny, verify=False)
    for options in ({"exact": True}, {"label_filter": label}, {}):
        warm.search(vector=queries[0], k=10, **options)
    del warm
before = status()
index = GalleryIndex.load(index_dir, verify=False)
loaded = status()
evict(os.path.join(index_dir, "vectors.npy"))
start = time.perf_counter()
index.search(vector=queries[0], k=10, exact=True)
cold = time.perf_counter() - start

def timed(**options):
    times = []
    for q in queries:
        start = time.perf_counter()
        index.search(vector=q, k=10, **options)
        times.append(time.perf_counter() - start)
    return [float(np.percentile(times, 50)) * 1e3, float(np.percentile(times, 99)) * 1e3]

has_label = label in index.labels()  # an index built without labels (search.py --keep) has no filtered row
exact, graph = timed(exact=True), timed()
filtered = timed(label_filter=label) if has_label else [float("nan")] * 2
after = status()
answers = [[h.id for h in index.search(vector=q, k=10, **options)] for q in queries[:20]
           for options in ({"exact": True}, {"label_filter": label} if has_label else {"exact": True})]
print(json.dumps({"count": len(index), "dim": index.dim,
                  "load": {k: loaded[k] - before[k] for k in loaded}, "after": {k: after[k] - before[k] for k in after},
                  "cold_exact_ms": cold * 1e3, "exact_ms": exact, "filtered_ms": filtered, "graph_ms": graph, "answers": answers}))
"""


def build(size: int, dim: int, out: Path) -> Path:
    from indexer.brute import clustered_unit_vectors
    from indexer.index import GalleryIndex

    index = GalleryIndex(dim, "benchmark", capacity=size)
    for lo in range(0, size, 50_000):
        n = min(50_000, size - lo)
        index.add_vectors(clustered_unit_vectors(n, dim, seed=lo), labels=[f"c{i % LABELS}" for i in range(lo, lo + n)],
                          sources=[f"folder:images/c{i % LABELS}/{i:07d}.png" for i in range(lo, lo + n)])
    index.save(out)
    return out


def measure(index_dir: Path, queries: Path, layout: str, repo: Path) -> dict:
    env = dict(os.environ, TWINSIGHT_SCAN_COPY=layout, PYTHONPATH=str(repo), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    done = subprocess.run([sys.executable, "-c", MEASURE, str(index_dir), str(queries), "c7"], env=env, cwd=repo,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the measuring process failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("/tmp/twinsight-memory"), help="where the built index goes")
    parser.add_argument("--index", type=Path, default=None, help="measure this saved index instead of building one")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--layouts", nargs="+", default=["mapped", "memory"])
    parser.add_argument("--before", type=Path, default=None,
                        help="also measure the code of this other checkout (e.g. `git worktree add ../before REV`)")
    args = parser.parse_args()
    if args.index is None:
        started = time.perf_counter()
        args.index = build(args.size, args.dim, args.out / f"{args.size}-{args.dim}")
        print(f"built and saved {args.size:,} x {args.dim} in {time.perf_counter() - started:.0f} s", flush=True)
    meta = json.loads((args.index / "meta.json").read_text())
    rng = np.random.default_rng(7)
    queries = rng.normal(size=(args.queries, meta["dim"])).astype(np.float32)
    queries_file = args.index.parent / f".{args.index.name}-queries.npy"
    np.save(queries_file, queries / np.linalg.norm(queries, axis=1, keepdims=True))
    raw = meta["count"] * meta["dim"] * 4
    print(f"\n{meta['count']:,} x {meta['dim']}-d, raw float32 {raw / 2**20:,.0f} MiB")
    print("| layout | after load: own (anon) | mapped (file) | after scans: own | mapped | cold exact ms | exact p50 / p99 ms "
          "| filtered (1%) p50 / p99 ms | graph p50 / p99 ms |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    answers = {}
    runs = [(layout, layout, ROOT) for layout in args.layouts]
    if args.before is not None:
        runs.append((f"before ({args.before.name})", "memory", args.before))
    for name, layout, repo in runs:
        r = measure(args.index, queries_file, layout, repo)
        answers[name] = r["answers"]
        print(f"| {name} | {r['load']['RssAnon'] / raw:.2f}x | {r['load']['RssFile'] / raw:.2f}x "
              f"| {r['after']['RssAnon'] / raw:.2f}x | {r['after']['RssFile'] / raw:.2f}x | {r['cold_exact_ms']:.0f} "
              f"| {r['exact_ms'][0]:.1f} / {r['exact_ms'][1]:.1f} | {r['filtered_ms'][0]:.2f} / {r['filtered_ms'][1]:.2f} "
              f"| {r['graph_ms'][0]:.2f} / {r['graph_ms'][1]:.2f} |", flush=True)
    queries_file.unlink()
    same = all(found == answers[runs[0][0]] for found in answers.values())
    print(f"exact and filtered top-10 of 20 queries identical in every run: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
