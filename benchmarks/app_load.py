"""Benchmark 4: the running app under concurrent gradio_client load, batched against one-at-a-time.

    .venv/bin/python benchmarks/app_load.py [--clients 1 4 16] [--requests 4] [--endpoints compare search]

Starts `app.py` on 127.0.0.1 twice: TWINSIGHT_CONCURRENCY=1 (one request at a time) and the default 8, where
concurrent requests reach the model together and its coalescer embeds them in one batch. Each client sends a
bounded number of requests; prints requests/s, p50/p95 latency and errors per configuration.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from app_server import AppServer  # noqa: E402


def make_images(folder: Path, n: int = 16) -> list[str]:
    import skimage.data

    base = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    paths = []
    for i in range(n):
        image = Image.fromarray(base[i % 4]).rotate(3 * i, expand=False)
        paths.append(str(folder / f"q{i}.jpg"))
        image.save(paths[-1], quality=90)
    return paths


def call(client, endpoint: str, a: str, b: str):
    from gradio_client import handle_file

    if endpoint == "compare":
        return client.predict(image_a=handle_file(a), image_b=handle_file(b), mode="general", api_name="/compare")
    return client.predict(handle_file(a), "", 8, [], api_name="/search")


def run_load(url: str, endpoint: str, clients: int, requests: int, images: list[str]) -> dict:
    from gradio_client import Client

    latencies, errors, lock = [], [], threading.Lock()
    # download_files=False: the results arrive (as file references) without the client fetching every image,
    # which cost the load generator 2-4x the server's CPU per request on these 2 shared cores
    connections = [Client(url, verbose=False, download_files=False) for _ in range(clients)]

    def worker(c: int):
        for r in range(requests):
            a, b = images[(c * requests + r) % len(images)], images[(c + r + 1) % len(images)]
            start = time.perf_counter()
            try:
                call(connections[c], endpoint, a, b)
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as exc:  # counted, and shown
                with lock:
                    errors.append(repr(exc)[:120])

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {"rps": len(latencies) / wall, "p50": np.percentile(ms, 50), "p95": np.percentile(ms, 95), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--endpoints", nargs="+", default=["compare", "search"])
    parser.add_argument("--model", default="effnet-lite0")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    images = make_images(work)
    results = {}
    for label, concurrency in (("one at a time", "1"), ("batched", "8")):
        folder = work / f"app-{concurrency}"
        folder.mkdir()
        with AppServer(folder, model=args.model, env={"TWINSIGHT_CONCURRENCY": concurrency}) as server:
            for endpoint in args.endpoints:
                run_load(server.url, endpoint, 1, 2, images)  # warm-up
                for clients in args.clients:
                    results[(label, endpoint, clients)] = run_load(server.url, endpoint, clients, args.requests, images)
    print("| endpoint | clients | mode | requests/s | p50 ms | p95 ms | errors |\n| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for (label, endpoint, clients), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        print(f"| {endpoint} | {clients} | {label} | {r['rps']:.2f} | {r['p50']:.0f} | {r['p95']:.0f} | {len(r['errors'])} |")
    for endpoint in args.endpoints:
        top = max(args.clients)
        ratio = results[("batched", endpoint, top)]["rps"] / results[("one at a time", endpoint, top)]["rps"]
        print(f"{endpoint}: batched / one-at-a-time throughput at {top} clients = {ratio:.2f}x")
    for key, r in results.items():
        if r["errors"]:
            print(key, r["errors"][:3])


if __name__ == "__main__":
    main()
