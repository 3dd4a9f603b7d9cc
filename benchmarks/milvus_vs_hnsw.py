"""Milvus Lite vs hnswlib on the same vectors: build time, query latency (p50/p99, k=10), recall@10 vs exact.

    python benchmarks/milvus_vs_hnsw.py                       # 100,000 clustered 512-d vectors, 1,000 queries
    python benchmarks/milvus_vs_hnsw.py --n 20000 --queries 200 --store milvus:http://HOST:19530
    python benchmarks/milvus_vs_hnsw.py --data realistic      # the set generated like real embeddings (search.py)

Both stores are driven through the classes the app uses (GalleryIndex, MilvusIndex: add_vectors, save,
search(vector=..., k=10)), with the same HNSW parameters (M=24, efConstruction=200, ef=96). Queries run one
at a time from one thread, so latency includes each store's Python/client overhead (for Milvus Lite, a local
gRPC round trip). Ground truth: exact cosine top-10 by brute force. Memory: resident memory added, of this process
and the processes it started (Milvus Lite's server), after the searches, against the raw float32 vectors (the
hnswlib store's own figures after a fresh load are benchmarks/index_memory.py's). Prints one JSON line per store.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer.brute import clustered_unit_vectors, exact_search, recall_at_k  # noqa: E402
from indexer.index import GalleryIndex, HnswParams  # noqa: E402
from indexer.index import parse_store  # noqa: E402
from scratch import disk_bytes  # noqa: E402


def rss(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return 0


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child] + descendants(child)
    return found


def resident() -> int:
    """Resident memory of this process and the processes it started (Milvus Lite's server is one)."""
    return rss() + sum(rss(child) for child in descendants(os.getpid()))


def measure(index, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, out: Path, k: int = 10,
            ready=lambda: None) -> dict:
    labels = [f"c{i % 50}" for i in range(len(vectors))]
    before = resident()
    started = time.perf_counter()
    ids = []
    for start in range(0, len(vectors), 10_000):
        ids += index.add_vectors(vectors[start:start + 10_000], labels[start:start + 10_000],
                                 rows=list(range(start, min(start + 10_000, len(vectors)))))
    added = time.perf_counter() - started
    index.save(out)
    ready()  # Milvus: wait until the HNSW index covers every row
    built = time.perf_counter() - started
    ids = np.asarray(ids)
    for q in queries[:20]:  # warm-up
        index.search(vector=q, k=k)
    latencies, found = [], []
    for q in queries:
        t = time.perf_counter()
        hits = index.search(vector=q, k=k)
        latencies.append(time.perf_counter() - t)
        found.append([h.id for h in hits])
    t = time.perf_counter()
    filtered = [index.search(vector=q, k=k, label_filter="c7") for q in queries[:100]]
    filtered_ms = (time.perf_counter() - t) / len(filtered) * 1e3
    assert all(h.label == "c7" for hits in filtered for h in hits)
    ms = np.asarray(latencies) * 1e3
    memory = resident() - before  # after the searches: what serving the index holds
    return {"n": len(vectors), "dim": vectors.shape[1], "queries": len(queries),
            "add_s": round(added, 1), "build_s": round(built, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "qps_1_thread": round(1e3 / float(ms.mean()), 1), "label_filter_mean_ms": round(filtered_ms, 3),
            "recall@10": round(recall_at_k(np.asarray(found), ids[truth]), 4), "disk_mb": round(disk_bytes(out) / 1e6, 1),
            "memory_mb": round(memory / 2**20), "memory_x_raw": round(memory / vectors.nbytes, 2)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--store", default=None, help="milvus:URI to benchmark (default: Milvus Lite in a temp dir)")
    parser.add_argument("--only", choices=["hnsw", "milvus"], help="run one store")
    parser.add_argument("--data", choices=["isotropic", "realistic"], default="isotropic",
                        help="isotropic clusters (the worst case) or the set generated to behave like real embeddings")
    args = parser.parse_args(argv)
    if args.data == "realistic":
        from realistic import load_set

        vectors, queries = load_set(args.n, args.dim, args.queries)
    else:
        vectors = clustered_unit_vectors(args.n, args.dim, clusters=100, seed=0)
        queries = clustered_unit_vectors(args.queries, args.dim, clusters=100, seed=1)
    truth, _ = exact_search(queries, vectors, 10)
    import torch  # noqa: F401  (the hnswlib store's scans load it: loaded now, so only the index is counted)
    tmp = Path(tempfile.mkdtemp(prefix="twinsight-bench-"))
    params = HnswParams()
    try:
        if args.only in (None, "hnsw"):
            index = GalleryIndex(args.dim, "benchmark", params, capacity=args.n)
            result = measure(index, vectors, queries, truth, tmp / "hnsw")
            print(json.dumps({"store": "hnswlib", "data": args.data, **result}), flush=True)
        if args.only in (None, "milvus"):
            from indexer.index import MilvusIndex

            store = parse_store(args.store or f"milvus:{tmp / 'milvus.db'}#bench")
            index = MilvusIndex(args.dim, "benchmark", params, store=store, source={"kind": "benchmark"},
                                expected=args.n)

            def ready(timeout=3600):
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    info = index.store._client.describe_index(index.collection, "vector")
                    if int(info.get("indexed_rows", 0)) >= args.n and not int(info.get("pending_index_rows", 0)):
                        return
                    time.sleep(0.5)

            result = measure(index, vectors, queries, truth, tmp / "milvus-ix", ready=ready)
            index_info = index.store._client.describe_index(index.collection, "vector")
            db = Path(store.uri) if store.is_local_file else None
            result["disk_mb"] = round(disk_bytes(db) / 1e6, 1) if db else None
            print(json.dumps({"store": f"milvus ({'Lite' if store.is_local_file else store.uri})", "data": args.data,
                              "index": index_info.get("index_type"), **result}), flush=True)
            if args.store:
                index.store._client.drop_collection(index.collection)
            index.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
