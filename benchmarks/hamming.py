"""Hamming mode vs float32 cosine: memory and recall@10 (and hnswlib's recall for comparison).

    python benchmarks/hamming.py                      # 20,000 clustered random vectors, dims 64 and 512
    python benchmarks/hamming.py --index DIR          # the vectors of a built index (real embeddings)

Ground truth is exact cosine top-10 (brute force). Queries: fresh vectors around the same cluster centres
(synthetic), or 200 items of the index (real). Prints one JSON line per configuration.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer.brute import clustered_unit_vectors, exact_search, recall_at_k  # noqa: E402
from indexer.index import GalleryIndex  # noqa: E402


def run(name: str, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> None:
    truth, _ = exact_search(queries, vectors, k)
    index = GalleryIndex(vectors.shape[1], "benchmark", capacity=len(vectors))
    index.add_vectors(vectors)
    found = np.array([[h.id for h in index.search(vector=q, k=k)] for q in queries])
    print(json.dumps({"data": name, "n": len(vectors), "dim": vectors.shape[1], "mode": "hnsw",
                      "recall@10": round(recall_at_k(found, truth), 4), "bytes": index.memory_bytes()["float32"]}))
    for kind, bits in (("sign", 0), ("itq", min(128, vectors.shape[1]))):
        started = time.perf_counter()
        index.enable_hamming(kind, bits)
        fit = time.perf_counter() - started
        memory = index.memory_bytes()
        for rerank in (10, 100, 500):
            started = time.perf_counter()
            found = np.array([[h.id for h in index.search(vector=q, k=k, metric="hamming", rerank=rerank)] for q in queries])
            per_query = (time.perf_counter() - started) / len(queries)
            print(json.dumps({
                "data": name, "n": len(vectors), "dim": vectors.shape[1], "mode": f"hamming-{kind}",
                "bits": index.hamming.bits, "rerank": rerank, "recall@10": round(recall_at_k(found, truth), 4),
                "bytes": memory["hamming"], "float32_bytes": memory["float32"],
                "ratio": round(memory["float32"] / memory["hamming"], 1), "ms_per_query": round(per_query * 1000, 3),
                "fit_seconds": round(fit, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", help="measure on the vectors of this index directory")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    if args.index:
        vectors = GalleryIndex.load(args.index).vectors()
        picks = np.random.default_rng(0).choice(len(vectors), min(args.queries, len(vectors)), replace=False)
        run(Path(args.index).name, vectors, vectors[picks])
        return
    for dim in (64, 512):
        run("clustered", clustered_unit_vectors(20_000, dim, 50, seed=0), clustered_unit_vectors(args.queries, dim, 50, seed=1))


if __name__ == "__main__":
    main()
