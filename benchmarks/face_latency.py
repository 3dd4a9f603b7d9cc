"""Benchmark 6: face mode latency per pair (detect, align, 128-d descriptor, distance).

    .venv/bin/python benchmarks/face_latency.py [--pairs 20] [--jitters 1 2 4] [--rounds 3] [--where worker]
        [--workers 1 2] [--no-beside]
    .venv/bin/python benchmarks/face_latency.py --interleave --jitters 1 2 3 --pairs 35 [--with-1600]

Per jitter setting (CNN passes per compared face, TWINSIGHT_FACE_JITTERS; default the app's) and per number of
worker processes (--workers, TWINSIGHT_FACE_WORKERS; default the app's: a pair's two images go to two workers at once):
uncached pairs (each image is fresh pixels: a slightly different crop, so the per-image cache cannot answer), wall
and CPU ms per pair (this process's and every worker's CPU), the configurations taking turns round by round so a
changing load hits them alike; then the same pairs again (cached detections: the cost of a repeated upload). Uses
scikit-image's astronaut photo and, when present, the dev faces in ../shared/data/faces-dev. Last, how fast a
pure-Python thread (as Gradio's event loop is) runs while face pairs are compared on another thread, against alone,
with dlib in worker processes (the default) and in this process: dlib keeps the GIL while it works. Prints the CPU
and the load average, as the figures move with both.

--interleave compares the settings on a loaded machine: dlib in this process, one model per setting, the settings
taking turns pair by pair so the load hits them alike; CPU ms per uncached pair (median, quartiles). --with-1600 adds
one pass with detection at 1600 px only (no 800 px copy first).
"""
from __future__ import annotations

import argparse
import os
import platform
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
    parser.add_argument("--jitters", type=int, nargs="+", default=[None], help="settings to time (default: the app's)")
    parser.add_argument("--rounds", type=int, default=1, help="uncached rounds per setting, each on new pixels")
    parser.add_argument("--where", choices=("both", "worker", "process"), default="both")
    parser.add_argument("--workers", type=int, nargs="+", default=[None],
                        help="worker process counts to time (default: the app's, TWINSIGHT_FACE_WORKERS)")
    parser.add_argument("--beside", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a pure-Python thread beside face comparisons")
    parser.add_argument("--interleave", action="store_true", help="settings take turns pair by pair (this process)")
    parser.add_argument("--with-1600", action="store_true", help="with --interleave: also 1 pass, detection at 1600 px")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start")
    if args.interleave:
        interleave(args.jitters, args.pairs, args.with_1600)
        return
    images = variants(sources(), 2 * args.pairs * (args.rounds + 1))
    for jitters in args.jitters:
        verifiers = {}
        configs = [("this process", True, None)] if args.where in ("both", "process") else []
        if args.where in ("both", "worker"):
            configs = [(None, False, workers) for workers in args.workers] + configs
        for where, in_process, workers in configs:
            start = time.perf_counter()
            model = FaceModel(in_process=in_process, jitters=jitters, workers=workers)
            where = where or f"{len(model.detectors)} worker process" + ("es" if len(model.detectors) > 1 else "")
            verifiers[where] = Verifier(None, face_model=model)
            print(f"face models loaded in {time.perf_counter() - start:.2f} s ({where}, jitters {model.jitters})")
        medians: dict[str, list[float]] = {where: [] for where in verifiers}
        for round_ in range(args.rounds):
            chunk = images[2 * args.pairs * round_:2 * args.pairs * (round_ + 1)]  # new pixels every round
            pairs = list(zip(chunk[0::2], chunk[1::2]))
            for where, verifier in verifiers.items():  # each its own cache: the same pixels are uncached for each
                medians[where].append(report(verifier, pairs, f"dlib in {where}, jitters {verifier.face_model.jitters}, "
                                                              f"round {round_ + 1}, uncached"))
        for where, verifier in verifiers.items():
            report(verifier, pairs, f"dlib in {where}, jitters {verifier.face_model.jitters}, cached (same images)")
            print(f"  {where}: uncached median over {args.rounds} rounds: mean {statistics.mean(medians[where]):.0f} ms "
                  f"wall per pair, range {min(medians[where]):.0f}-{max(medians[where]):.0f}; load average "
                  f"{os.getloadavg()[0]:.2f}")
        if args.beside:
            for _ in range(2):  # alternating, as the machine drifts
                for where, verifier in verifiers.items():
                    print(f"a pure-Python thread beside face comparisons, dlib in {where}: "
                          f"{python_beside(verifier, images):.0%} of its speed alone")
        for verifier in verifiers.values():
            verifier.face_model.close()


def interleave(settings: list[int | None], n_pairs: int, with_1600: bool) -> None:
    from indexer import face_worker

    configs = {f"jitters {FaceModel(in_process=True, jitters=j).jitters}": (face_worker.DETECT_MAX_SIDES, j)
               for j in settings}
    if with_1600:
        configs["1 pass, detection at 1600 px only"] = ((1600,), 1)
    models = {label: FaceModel(in_process=True, jitters=jitters) for label, (_, jitters) in configs.items()}
    images = variants(sources(), 2 * n_pairs)
    cpu: dict[str, list[float]] = {label: [] for label in configs}
    for a, b in zip(images[0::2], images[1::2]):
        for label, (sides, _) in configs.items():
            face_worker.DETECT_MAX_SIDES = sides  # dlib runs in this process, so the change reaches it
            start = time.process_time()
            try:
                models[label].one_face(a)
                models[label].one_face(b)
            except ValueError:
                continue  # the same pair fails for every setting (two faces)
            cpu[label].append((time.process_time() - start) * 1000)
    for label, times in cpu.items():
        low, median, high = statistics.quantiles(times)
        print(f"{label}: {len(times)} pairs, CPU {median:.0f} ms per uncached pair (quartiles {low:.0f}-{high:.0f})")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def report(verifier: Verifier, pairs: list[tuple[Image.Image, Image.Image]], label: str) -> float:
    """Time each pair's comparison; print and return the median in ms. Also the CPU time per pair, this process's
    and dlib's workers': on a shared machine wall time grows with the load, CPU time much less. On an idle machine a
    pair's wall time is about its CPU time with one worker (each step runs on one core), about half of it with two
    (the two images run on two cores at once)."""
    times = []
    workers = verifier.face_model.detectors
    cpu_start = time.process_time(), sum(map(worker_cpu, workers))
    for a, b in pairs:
        start = time.perf_counter()
        try:
            verifier.compare(a, b, Mode.FACE)
        except ValueError as exc:
            print("skipped:", str(exc)[:60])
            continue
        times.append((time.perf_counter() - start) * 1000)
    cpu = (time.process_time() - cpu_start[0] + sum(map(worker_cpu, workers)) - cpu_start[1]) * 1000 / max(1, len(times))
    print(f"{label}: {len(times)} pairs, median {statistics.median(times):.0f} ms per pair, "
          f"p90 {np.percentile(times, 90):.0f} ms; CPU {cpu:.0f} ms per pair")
    return statistics.median(times)


def worker_cpu(detector) -> float:
    """CPU seconds a face worker process has used (0 when dlib runs in this process: process_time counts it). A worker
    restarted during a run would be counted from its restart only (none is, unless one dies)."""
    pid = getattr(detector, "pid", None)
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


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
