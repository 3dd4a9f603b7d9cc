"""Benchmark 5: cold start, from `python app.py` to the first answered request.

    .venv/bin/python benchmarks/cold_start.py [--items 100000]
    .venv/bin/python benchmarks/cold_start.py --steps    # where a start's time goes, step by step

Three starts of the real app on 127.0.0.1, each timed from process launch to the first answered /search call:
no index on disk (the built-in gallery is embedded at start), the same index persisted (a restart), and a
persisted index grown to `--items` vectors (random unit vectors added to the built-in gallery's index: loading
must not re-embed anything).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from app_server import AppServer  # noqa: E402
from scratch import scratch_dir  # noqa: E402


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
    from indexer.build import tune_ef_if_due
    from indexer.gallery import open_default_gallery
    from indexer.index import DEFAULT_TARGET_RECALL

    index = open_default_gallery(load_embedder(model), cache_root=index_dir)
    rng = np.random.default_rng(0)
    for lo in range(0, items - len(index), 20_000):
        n = min(20_000, items - len(index))
        vectors = rng.normal(size=(n, index.dim)).astype(np.float32)
        index.add_vectors(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels=["random"] * n, sources=[""] * n)
    tune_ef_if_due(index, DEFAULT_TARGET_RECALL)  # as a build of this size does, so the app's start does not
    index.save()
    return len(index)


STEPS = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
marks = [("start", time.perf_counter())]
def mark(name): marks.append((name, time.perf_counter()))
import torch; mark("import torch")
import gradio; mark("import gradio")
import transformers; mark("import transformers")
from demo import runtime; mark("import demo")
runtime.configure(model=sys.argv[2])
runtime.embedder(); mark("load the model")
runtime.gallery(); mark("open the gallery")
from indexer.verify import Mode
for mode in Mode:
    runtime.verifier().threshold(mode)
mark("default thresholds")
import app
app.build_app(); mark("build the page")
print(" | ".join(f"{name} {end - begin:.2f} s" for (_, begin), (name, end) in zip(marks, marks[1:])))
"""


def startup_steps(model: str, index_dir: Path) -> None:
    """Time each start-up step in a fresh process (twice: a first start, then a restart with the caches)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TWINSIGHT_INDEX_DIR": str(index_dir)}
    for start in ("first start", "restart"):
        out = subprocess.run([sys.executable, "-c", STEPS, str(ROOT), model], env=env, capture_output=True, text=True)
        print(f"{start}: {out.stdout.strip() or out.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--model", default="effnet-lite0")
    parser.add_argument("--steps", action="store_true", help="only time each start-up step, in-process")
    args = parser.parse_args()
    work = scratch_dir()
    if args.steps:
        return startup_steps(args.model, work / "step-indexes")
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
