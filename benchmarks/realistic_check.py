"""Does the generated set behave like real embeddings? Recall@10 per ef, real against generated (and isotropic).

    nice -n 5 .venv/bin/python benchmarks/realistic_check.py [--n 100000] [--dims 1280 512] [--efs 10 16 32 64 96]

For each dimension, three galleries of the same size, each with 1,000 held-out queries from its own distribution:
the real augmented embeddings (benchmarks/realistic_embed.py; random views held out as queries), a set sampled from
the generator fitted to that real gallery alone (benchmarks/realistic.py; the queries play no part in the fit), and
the isotropic clusters benchmarks/search.py has used so far. Each is built with the store's default parameters
(HnswParams: M=24, ef_construction=200), then per ef: recall@10 against exact search and p50 latency; last the ef
the build's tuner picks. Also how close the neighbours are (median cosine of the 1st and 10th), which the graph's
difficulty follows. --prefix uses the real views embedded so far (a run still going).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from indexer.brute import clustered_unit_vectors, exact_search, recall_at_k  # noqa: E402
from indexer.index import HnswParams  # noqa: E402
from realistic import CLUSTERS, fit, hold_out, real_set, sample  # noqa: E402
from search import build_index, timed_queries  # noqa: E402


def three_sets(dim: int, n: int, queries: int, prefix: bool, clusters: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (gallery, queries): real, generated (fitted to the real gallery only) and isotropic."""
    vectors, groups = real_set(dim, prefix=prefix)
    if len(vectors) < n + queries:
        print(f"only {len(vectors):,} real views: n lowered to {len(vectors) - queries:,}", flush=True)
        n = len(vectors) - queries
    rows, held = hold_out(len(vectors), queries, seed=0)
    rows = rows[:n]
    generated = sample(fit(vectors[rows], groups[rows], clusters), n + queries, seed=1)
    g_rows, g_held = hold_out(len(generated), queries, seed=1)
    return {"real": (vectors[rows], vectors[held]),
            "generated": (generated[g_rows], generated[g_held]),
            "isotropic": (clustered_unit_vectors(n, dim, seed=0), clustered_unit_vectors(queries, dim, seed=99))}


def curve(gallery: np.ndarray, queries: np.ndarray, efs: list[int]) -> dict:
    """Build with the default parameters; recall@10 and p50 ms per ef, the tuned ef, neighbour closeness."""
    truth, similarity = exact_search(queries, gallery, 10)
    start = time.perf_counter()
    index = build_index(gallery, HnswParams())
    result = {"build_s": time.perf_counter() - start, "top1": float(np.median(similarity[:, 0])),
              "top10": float(np.median(similarity[:, 9]))}
    for ef in efs:
        index.ef = ef
        found, ms = timed_queries(index, queries)
        result[ef] = (recall_at_k(found, truth), float(np.percentile(ms, 50)))
    index.ef = HnswParams.ef
    tuning = index.tune_ef()
    found, ms = timed_queries(index, queries)
    result["tuned"] = (tuning.ef, recall_at_k(found, truth), float(np.percentile(ms, 50)))
    return result


def table(dim: int, n: int, results: dict[str, dict], efs: list[int]) -> str:
    names = list(results)
    lines = [f"\n## {n:,} x {dim}-d, recall@10 (p50 ms)",
             "| ef | " + " | ".join(names) + " |", "| ---: |" + " ---: |" * len(names)]
    for ef in efs:
        lines.append(f"| {ef} | " + " | ".join(f"{r[ef][0]:.4f} ({r[ef][1]:.3f})" for r in results.values()) + " |")
    lines.append("| tuned: ef, recall (p50 ms) | " + " | ".join(
        f"{r['tuned'][0]}, {r['tuned'][1]:.4f} ({r['tuned'][2]:.3f})" for r in results.values()) + " |")
    lines.append("| build s | " + " | ".join(f"{r['build_s']:.1f}" for r in results.values()) + " |")
    lines.append("| median cosine to 1st / 10th neighbour | " + " | ".join(
        f"{r['top1']:.3f} / {r['top10']:.3f}" for r in results.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dims", type=int, nargs="+", default=[1280, 512])
    parser.add_argument("--efs", type=int, nargs="+", default=[10, 16, 24, 32, 48, 64, 96])
    parser.add_argument("--clusters", type=int, default=CLUSTERS, help="concept clusters of the generator")
    parser.add_argument("--sets", nargs="+", default=["real", "generated", "isotropic"])
    parser.add_argument("--prefix", action="store_true", help="use the real views embedded so far")
    args = parser.parse_args()
    for dim in args.dims:
        sets = three_sets(dim, args.n, args.queries, args.prefix, args.clusters)
        results = {}
        for name in args.sets:
            results[name] = curve(*sets[name], args.efs)
            print(f"{name} {dim}-d done", flush=True)
        print(table(dim, len(sets["real"][0]), results, args.efs), flush=True)


if __name__ == "__main__":
    main()
