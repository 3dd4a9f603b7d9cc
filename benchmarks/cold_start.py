"""Benchmark 5: cold start, from `python app.py` to the first answered request.

    .venv/bin/python benchmarks/cold_start.py [--items 100000]

Three starts of the real app on 127.0.0.1, each timed from process launch to the first answered /search call:
no index on disk (the built-in gallery is embedded at start), the same index persisted (a restart), and a
persisted index grown to `--items` vectors (random unit vectors added to the built-in gallery's index: loading
must not re-embed anything).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from app_server import AppServer  # noqa: E402


def first_answer(folder: Path, index_dir: Path, model: str, query: str) -> tuple[float, float]:
    """(seconds to HTTP ready, seconds to the first answered search) from process launch."""
    from gradio_client import Client, handle_file

    start = time.perf_counter()
    server = AppServer(folder, model=model, env={"TWINSIGHT_INDEX_DIR": str(index_dir)})
    try:
        server.wait_ready(timeout=1800)
        ready = time.perf_counter() - start
        Client(server.url, verbose=False).predict(handle_file(query), "", 5, [], api_name="/search")
        return ready, time.perf_counter() - start
    finally:
        server.stop()


def grow_index(index_dir: Path, model: str, items: int) -> int:
    from indexer import load_embedder
    from indexer.gallery import open_default_gallery

    index = open_default_gallery(load_embedder(model), cache_root=index_dir)
    rng = np.random.default_rng(0)
    for lo in range(0, items - len(index), 20_000):
        n = min(20_000, items - len(index))
        vectors = rng.normal(size=(n, index.dim)).astype(np.float32)
        index.add_vectors(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels=["random"] * n, sources=[""] * n)
    index.save()
    return len(index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--model", default="effnet-lite0")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    query = str(ROOT / "assets" / "examples" / "cat-a.jpg")
    index_dir = work / "indexes"
    rows = [("no index (built-in gallery embedded at start)", *first_answer(work, index_dir, args.model, query))]
    rows.append(("persisted built-in index (restart)", *first_answer(work, index_dir, args.model, query)))
    start = time.perf_counter()
    count = grow_index(index_dir, args.model, args.items)
    print(f"grew the persisted index to {count:,} items in {time.perf_counter() - start:.0f} s (one-off, not part of a start)")
    rows.append((f"persisted {count:,}-item index", *first_answer(work, index_dir, args.model, query)))
    print("| start | HTTP ready s | first answer s |\n| --- | ---: | ---: |")
    for label, ready, answered in rows:
        print(f"| {label} | {ready:.1f} | {answered:.1f} |")


if __name__ == "__main__":
    main()
