"""Benchmark 6: face mode latency per pair (detect, align, 128-d descriptor, distance).

    .venv/bin/python benchmarks/face_latency.py [--pairs 20]

Uncached pairs (each image is fresh pixels: a slightly different crop, so the per-image cache cannot answer),
then the same pairs again (cached detections: the cost of a repeated upload). Uses scikit-image's astronaut photo
and, when present, the dev faces in ../shared/data/faces-dev. Last, how fast a pure-Python thread (as Gradio's event
loop is) runs while face pairs are compared on another thread, against alone, with dlib in its worker process (the
default) and in this process: dlib keeps the GIL while it works.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.face import FaceModel  # noqa: E402
from indexer.verify import Mode, Verifier  # noqa: E402

DEV_FACES = ROOT.parent / "shared" / "data" / "faces-dev"


def sources() -> list[Image.Image]:
    import skimage.data

    images = [Image.fromarray(skimage.data.astronaut())]
    images += [Image.open(p).convert("RGB") for p in sorted(DEV_FACES.glob("*.jpg"))]
    return images


def variants(images: list[Image.Image], n: int) -> list[Image.Image]:
    out = []
    for i in range(n):
        image = images[i % len(images)]
        w, h = image.size
        out.append(image.crop((i % 7, i % 5, w - (i % 3), h)))  # new pixels each time: no cache hit
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=20)
    args = parser.parse_args()
    start = time.perf_counter()
    verifiers = {"a worker process": Verifier(None, face_model=FaceModel(in_process=False))}
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    verifiers["this process"] = Verifier(None, face_model=FaceModel(in_process=True))
    print(f"face models loaded in {loaded:.2f} s (a worker process), {time.perf_counter() - start:.2f} s (this "
          f"process); {len(sources())} source photos, sizes {sorted({im.size for im in sources()})}")
    images = variants(sources(), 2 * args.pairs)
    pairs = list(zip(images[0::2], images[1::2]))
    for where, verifier in verifiers.items():
        for label in ("uncached", "cached (same images again)"):
            times = []
            for a, b in pairs:
                start = time.perf_counter()
                try:
                    verifier.compare(a, b, Mode.FACE)
                except ValueError as exc:
                    print("skipped:", str(exc)[:60])
                    continue
                times.append((time.perf_counter() - start) * 1000)
            print(f"dlib in {where}, {label}: {len(times)} pairs, median {statistics.median(times):.0f} ms per pair, "
                  f"p90 {np.percentile(times, 90):.0f} ms")
    for _ in range(2):  # alternating, as the machine drifts
        for where, verifier in verifiers.items():
            print(f"a pure-Python thread beside face comparisons, dlib in {where}: "
                  f"{python_beside(verifier, images):.0%} of its speed alone")


def python_loop_rate(seconds: float = 2.0) -> float:
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sum(i * i for i in range(100))
        calls += 1
    return calls / seconds


def python_beside(verifier: Verifier, images: list[Image.Image]) -> float:
    """Rate of a pure-Python loop while another thread compares uncached face pairs, over its rate alone."""
    alone, done = python_loop_rate(), threading.Event()

    def compare_faces():
        for i in range(10**6):
            if done.is_set():
                return
            a = images[i % len(images)]
            fresh = a.crop((0, 0, a.width - 1 - i % 50, a.height))  # new pixels: no cache hit
            try:
                verifier.compare(fresh, images[(i + 1) % len(images)], Mode.FACE)
            except ValueError:
                pass

    worker = threading.Thread(target=compare_faces)
    worker.start()
    try:
        beside = python_loop_rate()
    finally:
        done.set()
        worker.join()
    return beside / alone


if __name__ == "__main__":
    main()
