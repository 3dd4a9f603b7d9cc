"""Face mode beside other users: gallery search requests/s with and without one user comparing faces at the same time,
with dlib in its worker process (the default) and in the app's process (TWINSIGHT_FACE_WORKER=0).

    .venv/bin/python benchmarks/face_beside_load.py [--clients 4] [--requests 20] [--rounds 3]

Starts `app.py` (EfficientNet-Lite0) twice on 127.0.0.1, side by side (the one not measured is frozen with SIGSTOP),
and takes turns, round after round. In each turn: `--clients` clients search the gallery by image, alone, then
again while one more client compares face photos (every photo new pixels, so the app's per-image cache cannot
answer). Prints medians: search requests/s alone and beside the face user, their ratio, and the face user's
compares and latency. dlib keeps the GIL while it works, so in the app's process it stalls the other requests.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from app_load import make_images, run_load, running  # noqa: E402
from app_server import AppServer  # noqa: E402
from face_latency import sources  # noqa: E402
from scratch import scratch_dir  # noqa: E402

FACE_PHOTO_MAX_SIDE = 1200  # phone photos are often larger; uploads this size keep the load generator cheap


def face_photos(folder: Path, n: int) -> list[str]:
    """`n` JPEGs of faces, each with pixels of its own (a slightly different crop)."""
    base = []
    for image in sources():
        image = image.copy()
        image.thumbnail((FACE_PHOTO_MAX_SIDE, FACE_PHOTO_MAX_SIDE))
        base.append(image)
    paths = []
    for i in range(n):
        image = base[i % len(base)]
        w, h = image.size
        paths.append(str(folder / f"face{i}.jpg"))
        image.crop((i % 11, i % 7, w - i % 5, h)).save(paths[-1], quality=90)
    return paths


class FaceUser(threading.Thread):
    """Compares face pairs in a loop until stopped; records latencies."""

    def __init__(self, url: str, photos: list[str], start_at: int):
        super().__init__()
        self.url, self.photos, self.next = url, photos, start_at
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.rate = 0.0  # compares/s
        self.done = threading.Event()

    def run(self) -> None:
        from gradio_client import Client, handle_file

        client = Client(self.url, verbose=False, download_files=False, ssl_verify=False)
        began = time.perf_counter()
        while not self.done.is_set():
            a, b = self.photos[self.next % len(self.photos)], self.photos[(self.next + 1) % len(self.photos)]
            self.next += 2
            start = time.perf_counter()
            try:
                client.predict(image_a=handle_file(a), image_b=handle_file(b), mode="face", largest_face=True,
                               api_name="/compare")
                self.latencies.append(time.perf_counter() - start)
            except Exception as exc:  # counted, and shown
                self.errors.append(repr(exc)[:120])
        self.rate = len(self.latencies) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="concurrent gallery search clients")
    parser.add_argument("--requests", type=int, default=20, help="search requests per client per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = scratch_dir()
    queries = make_images(work)
    photos = face_photos(work, 400)
    used = 0  # face photos are never reused across measurements: each compare is uncached
    apps = {"worker process": {"TWINSIGHT_FACE_WORKER": "1"}, "app's process": {"TWINSIGHT_FACE_WORKER": "0"}}
    results: dict[str, dict[str, list]] = {label: {"alone": [], "beside": [], "ratio": [], "face_ms": [],
                                                   "face_rate": [], "errors": []} for label in apps}
    with contextlib.ExitStack() as stack:
        servers = {}
        for label, env in apps.items():
            folder = work / f"app-{len(servers)}"
            folder.mkdir()
            servers[label] = stack.enter_context(AppServer(folder, env=env))
        for server in servers.values():
            stack.callback(os.kill, server.process.pid, signal.SIGCONT)  # before the stop: a frozen app can't exit
            os.kill(server.process.pid, signal.SIGSTOP)
        for server in servers.values():
            with running(server):
                run_load(server.url, "search", 1, 2, queries)  # warm-up
        for _ in range(args.rounds):
            for label, server in servers.items():
                with running(server):
                    alone = run_load(server.url, "search", args.clients, args.requests, queries)
                    user = FaceUser(server.url, photos, used)
                    user.start()
                    time.sleep(1.0)  # the face user's client connects first
                    beside = run_load(server.url, "search", args.clients, args.requests, queries)
                    user.done.set()
                    user.join()
                    used = user.next
                record = results[label]
                record["alone"].append(alone["rps"])
                record["beside"].append(beside["rps"])
                record["ratio"].append(beside["rps"] / alone["rps"])
                record["face_ms"] += [t * 1000 for t in user.latencies]
                record["face_rate"].append(user.rate)
                record["errors"] += alone["errors"] + beside["errors"] + user.errors
    if used > len(photos):
        print(f"note: {used} face photos used, {len(photos)} made: some compares were answered from the cache")
    print(f"{args.clients} search clients x {args.requests} requests, medians of {args.rounds} alternating rounds")
    print("| dlib runs in | search req/s alone | beside a face user | ratio (rounds) | face compares/s | face p50 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, r in results.items():
        print(f"| {label} | {statistics.median(r['alone']):.2f} | {statistics.median(r['beside']):.2f} | "
              f"{statistics.median(r['ratio']):.2f} ({', '.join(f'{x:.2f}' for x in r['ratio'])}) | "
              f"{statistics.median(r['face_rate']):.2f} | {np.median(r['face_ms']):.0f} | {len(r['errors'])} |")
        if r["errors"]:
            print("   ", r["errors"][:3])


if __name__ == "__main__":
    main()
