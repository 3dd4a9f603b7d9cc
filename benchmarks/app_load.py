"""Benchmark 4: the running app under concurrent gradio_client load, batched against one-at-a-time.

    .venv/bin/python benchmarks/app_load.py [--clients 1 4 16] [--requests 6] [--rounds 3] [--endpoints compare search]
        [--models effnet-lite0 open_clip:ViT-B-32] [--served N]
    .venv/bin/python benchmarks/app_load.py --models open_clip:ViT-B-32 --endpoints text   # search by text

Starts `app.py` on 127.0.0.1 three times per model, side by side (the two not being measured are frozen with
SIGSTOP), and sends each the same load in turn, for `--rounds` alternating rounds (medians; the batched /
one-at-a-time ratio is taken within each round). The three:
TWINSIGHT_CONCURRENCY=1 (one request at a time); the app's concurrency (app.CONCURRENCY, or --concurrency) with
merging off (TWINSIGHT_MAX_BATCH=1: requests overlap but each runs its own forward); and the app's defaults
("batched"), where concurrent requests reach the model together and its coalescer embeds them in one batch. Each
client sends a bounded number of requests; prints requests/s, p50/p95 latency, errors, and the app's CPU time per
request. --served N first sends each app N requests (16 clients), to measure an app that has been up for a while.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from app_server import AppServer  # noqa: E402
from scratch import scratch_dir  # noqa: E402


def make_images(folder: Path, n: int = 16) -> list[str]:
    import skimage.data

    base = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    paths = []
    for i in range(n):
        image = Image.fromarray(base[i % 4]).rotate(3 * i, expand=False)
        paths.append(str(folder / f"q{i}.jpg"))
        image.save(paths[-1], quality=90)
    return paths


_new_texts = itertools.count()


def call(client, endpoint: str, a: str, b: str):
    from gradio_client import handle_file

    if endpoint == "compare":
        return client.predict(image_a=handle_file(a), image_b=handle_file(b), mode="general", api_name="/compare")
    if endpoint == "text":  # gallery search by text, a new text every time: the model's text cache cannot answer
        return client.predict(None, f"a photo of thing number {next(_new_texts)}", 8, [], api_name="/search")
    return client.predict(handle_file(a), "", 8, [], api_name="/search")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(url: str, endpoint: str, clients: int, requests: int, images: list[str], pid: int | None = None) -> dict:
    from gradio_client import Client

    latencies, errors, lock = [], [], threading.Lock()
    # The load generator shares the app's 2 cores, so it must be cheap. gradio_client opens a new httpx client
    # per request, and with ssl_verify on each one loads the CA bundle (~50 ms of CPU, for plain http); it also
    # fetched every result image. Off, the client costs ~11 ms of CPU per request instead of 110-470 ms.
    connections = [Client(url, verbose=False, download_files=False, ssl_verify=False) for _ in range(clients)]

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

    start, cpu_start = time.perf_counter(), cpu_seconds(pid) if pid else 0.0
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    app_cpu = (cpu_seconds(pid) - cpu_start) / max(1, clients * requests) * 1000 if pid else float("nan")
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {"rps": len(latencies) / wall, "p50": np.percentile(ms, 50), "p95": np.percentile(ms, 95), "errors": errors,
            "app_cpu_ms": app_cpu}


@contextlib.contextmanager
def running(server: AppServer):
    """Thaw a frozen app for the duration of a measurement."""
    os.kill(server.process.pid, signal.SIGCONT)
    time.sleep(0.2)  # let it catch up on timers that fired while it was frozen
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGSTOP)


def median_result(runs: list[dict]) -> dict:
    return {key: float(np.median([r[key] for r in runs])) for key in ("rps", "p50", "p95", "app_cpu_ms")} | {
        "errors": [e for r in runs for e in r["errors"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=6, help="requests per client")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the three modes per cell (medians)")
    parser.add_argument("--concurrency", type=int, default=None, help="batched mode's TWINSIGHT_CONCURRENCY (default: the app's)")
    parser.add_argument("--endpoints", nargs="+", default=["compare", "search"], choices=["compare", "search", "text"],
                        help="text: gallery search by text (models with a text tower)")
    parser.add_argument("--served", type=int, default=0, help="requests each app serves before the measurements")
    parser.add_argument("--models", nargs="+", default=["effnet-lite0", "open_clip:ViT-B-32"],
                        help="open_clip:ViT-B-32 without a tag runs random weights: the speed is the real model's")
    args = parser.parse_args()
    work = scratch_dir()
    images = make_images(work)
    runs: dict[tuple, list[dict]] = {}
    ratios: dict[tuple, list[float]] = {}
    for model in args.models:
        concurrency = {"TWINSIGHT_CONCURRENCY": str(args.concurrency)} if args.concurrency else {}
        modes = (("one at a time", {"TWINSIGHT_CONCURRENCY": "1"}),
                 ("concurrent, unmerged", {**concurrency, "TWINSIGHT_MAX_BATCH": "1"}),
                 ("batched", concurrency))
        # The three apps run side by side (an idle one costs nothing) and take turns, round after round: this
        # shared machine's speed drifts by tens of percent within minutes, so modes measured one after the
        # other would compare different machines.
        with contextlib.ExitStack() as stack:
            servers = {}
            for label, env in modes:
                folder = work / f"app-{model.replace(':', '-')}-{len(servers)}"
                folder.mkdir()
                servers[label] = stack.enter_context(AppServer(folder, model=model, env=env))
            # An idle Gradio app is not free: its queue polls every millisecond (~7% of a core here), so the apps
            # not under load are frozen (SIGSTOP) and only the one measured runs.
            for server in servers.values():
                stack.callback(os.kill, server.process.pid, signal.SIGCONT)  # before the stop: a frozen app can't exit
                os.kill(server.process.pid, signal.SIGSTOP)
            for endpoint in args.endpoints:
                for server in servers.values():
                    with running(server):
                        run_load(server.url, endpoint, 1, 2, images)  # warm-up
                        if args.served:
                            run_load(server.url, endpoint, 16, -(-args.served // 16), images)
                for clients in args.clients:
                    for _ in range(args.rounds):
                        rps = {}
                        for label, server in servers.items():
                            with running(server):
                                result = run_load(server.url, endpoint, clients, args.requests, images, server.process.pid)
                            runs.setdefault((model, endpoint, clients, label), []).append(result)
                            rps[label] = result["rps"]
                        ratios.setdefault((model, endpoint, clients, "one at a time"), []).append(rps["batched"] / rps["one at a time"])
                        ratios.setdefault((model, endpoint, clients, "concurrent, unmerged"), []).append(
                            rps["batched"] / rps["concurrent, unmerged"])
    results = {key: median_result(value) for key, value in runs.items()}
    print(f"medians of {args.rounds} alternating rounds, {args.requests} requests per client")
    print("| model | endpoint | clients | mode | requests/s | p50 ms | p95 ms | app CPU ms/request | errors |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for (model, endpoint, clients, label), r in results.items():
        print(f"| {model} | {endpoint} | {clients} | {label} | {r['rps']:.2f} | {r['p50']:.0f} | {r['p95']:.0f} | "
              f"{r['app_cpu_ms']:.0f} | {len(r['errors'])} |")
    top = max(args.clients)
    for model in args.models:
        for endpoint in args.endpoints:
            against = []
            for other in ("one at a time", "concurrent, unmerged"):
                each = ratios[(model, endpoint, top, other)]
                against.append(f"{other}: median {np.median(each):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in each)})")
            print(f"{model} {endpoint} at {top} clients, batched against " + "; ".join(against))
    for key, r in results.items():
        if r["errors"]:
            print(key, r["errors"][:3])


if __name__ == "__main__":
    main()
