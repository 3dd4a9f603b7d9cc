"""Benchmark 1: model throughput (images/s) for fp32 against the fast path, and their agreement.

    .venv/bin/python benchmarks/model_throughput.py [--batches 1 8 32 64] [--repeats 5] [--models vit-b-32 hf-vit effnet]
    .venv/bin/python benchmarks/model_throughput.py --compile --models effnet vit-b-32 --batches 1 8   # torch.compile
    .venv/bin/python benchmarks/model_throughput.py --busy-python --models effnet vit-b-32 --batches 1 8   # the GIL
    .venv/bin/python benchmarks/model_throughput.py --zero-shot --models vit-b-32 --batches 1   # text embedding cache
    .venv/bin/python benchmarks/model_throughput.py --int8 --batches 1 8 32 --rounds 5   # int8 vs bf16 vs fp32

Model-only throughput on preprocessed batches (decode cost is benchmark 2's subject). Random weights are fine for
speed; agreement is checked on the real EfficientNet-Lite0 weights and on real photos.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer import create_embedder  # noqa: E402
from indexer.augment import random_crops  # noqa: E402
from indexer.brute import NeighbourAgreement, neighbour_agreement, top_k  # noqa: E402
from indexer.device import cpu_has_fast_bf16, cpu_has_fast_int8  # noqa: E402
from scratch import scratch_dir  # noqa: E402


def hf_vit_dir() -> str:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = scratch_dir() / "vit-b-16"
    ViTModel(ViTConfig()).save_pretrained(folder)  # ViT-B/16, random weights
    ViTImageProcessor().save_pretrained(folder)
    return f"hf:{folder}"


MODELS = {"vit-b-32": lambda: "open_clip:ViT-B-32", "hf-vit": hf_vit_dir, "effnet": lambda: "effnet-lite0"}


def images_per_second(embedder, batch: int, repeats: int, warm_up: int = 2) -> float:
    pixels = torch.randn(batch, 3, 224, 224)
    for _ in range(warm_up):  # oneDNN builds its kernels for a new shape on the first calls
        embedder.embed_pixels(pixels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embedder.embed_pixels(pixels)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def photos() -> list:
    import skimage.data

    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "horse", "immunohistochemistry", "hubble_deep_field", "retina")
    return random_crops([getattr(skimage.data, n)() for n in names], per_image=20)  # 200 real-photo views


def one_stream(spec: str, precision: str, channels_last: bool = False, traced: bool = False):
    """One model stream using every thread (TWINSIGHT_MODEL_WORKERS=1), in the given precision and layout, eager
    unless `traced`."""
    with mock.patch.dict(os.environ, {"TWINSIGHT_MODEL_WORKERS": "1", "TWINSIGHT_TRACE": "1" if traced else "0"}):
        embedder = create_embedder(spec, device="cpu", precision=precision)
        embedder.use_channels_last(channels_last)  # (traces again for the layout)
    return embedder


def busy_python_check(spec: str, batch: int, seconds: float = 3.0) -> str:
    """The fast path through `embed_pixels`, eager (TWINSIGHT_TRACE=0) and traced (the default), alone and beside
    one thread running pure Python, as Gradio's event loop and request threads do in the app. Images/s; for models
    with a text tower, a second row: texts/s through `encode_texts`, `batch` new texts per call (none cached)."""
    import itertools
    import threading

    embedders = {"eager": None, "traced": None}
    for name in embedders:
        with mock.patch.dict(os.environ, {"TWINSIGHT_TRACE": "1" if name == "traced" else "0"}):
            embedders[name] = create_embedder(spec, device="cpu", precision="bf16")
    pixels, numbers = torch.randn(batch, 3, 224, 224), itertools.count()

    def images(embedder):
        embedder.embed_pixels(pixels)

    def texts(embedder):
        embedder.encode_texts([f"a photo of thing number {next(numbers)}" for _ in range(batch)])

    def rate(embedder, work) -> float:
        work(embedder)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            work(embedder)
            calls += 1
        return batch * calls / (time.perf_counter() - start)

    busy = threading.Event()

    def spin():
        while busy.is_set():
            sum(i * i for i in range(200))

    rows = []
    for label, work in (("", images), (" text tower", texts))[: 1 + embedders["traced"].supports_text]:
        cells = []
        for embedder in embedders.values():
            cells.append(rate(embedder, work))
            busy.set()
            spinner = threading.Thread(target=spin)
            spinner.start()
            try:
                cells.append(rate(embedder, work))
            finally:
                busy.clear()
                spinner.join()
        rows.append(f"| {spec}{label} | {batch} | " + " | ".join(f"{x:.1f}" for x in cells) + f" | {cells[3] / cells[1]:.1f}x |")
    return "\n".join(rows)


def plain_fp32(spec: str):
    """The reference: fp32 weights, default (NCHW) layout, one stream."""
    return one_stream(spec, "fp32")


def agreement(spec: str, precision: str = "bf16") -> tuple[float, NeighbourAgreement]:
    """(min per-image cosine fp32 vs fast, top-10 neighbour agreement on a gallery of 200 real-photo crops)."""
    images = photos()
    a = plain_fp32(spec).encode_images(images)
    b = create_embedder(spec, device="cpu", precision=precision).encode_images(images)  # with its fast layout
    return float((a * b).sum(1).min()), neighbour_agreement(a, b, k=10)


def compile_check(spec: str, batch: int, rounds: int = 5, calls: int = 20) -> str:
    """torch.compile (inductor, weights frozen as constants) against eager, both in the fast path's precision and
    layout, alternated `rounds` times: the forward alone on this thread, and through `embed_pixels` (the app's and
    the indexer's path: the model's own threads, two streams on a CPU). Medians of images/s."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # without it inductor was no faster than eager here
    embedder = create_embedder(spec, device="cpu", precision="bf16")
    eager = embedder._image_features
    compiled = torch.compile(eager, dynamic=False)
    pixels = torch.randn(batch, 3, 224, 224)
    model_input = embedder._model_input(pixels)

    def rate(call) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        return batch * calls / (time.perf_counter() - start)

    start = time.perf_counter()
    with torch.inference_mode():
        compiled(model_input)
    compile_seconds = time.perf_counter() - start
    embedder._image_features = compiled
    for _ in range(2):  # the model threads' own shapes and thread counts compile here
        embedder.embed_pixels(pixels)
    alone, served = {"eager": [], "compiled": []}, {"eager": [], "compiled": []}
    for _ in range(rounds):
        for name, forward in (("eager", eager), ("compiled", compiled)):
            with torch.inference_mode():
                alone[name].append(rate(lambda: forward(model_input)))
            embedder._image_features = forward
            served[name].append(rate(lambda: embedder.embed_pixels(pixels)))
    a0, a1 = statistics.median(alone["eager"]), statistics.median(alone["compiled"])
    s0, s1 = statistics.median(served["eager"]), statistics.median(served["compiled"])
    return f"| {spec} | {batch} | {compile_seconds:.1f} | {a0:.1f} | {a1:.1f} | {a1 / a0:.2f}x | {s0:.1f} | {s1:.1f} | {s1 / s0:.2f}x |"


def zero_shot_check(spec: str, batch: int, repeats: int = 5) -> str:
    """A zero-shot call on `batch` photos with the classification page's default labels: the first call (the
    label prompts go through the text tower) and the median of the next `repeats` (their embeddings are cached)."""
    from demo.classification import DEFAULT_LABELS, parse_labels

    embedder = create_embedder(spec, device="cpu")
    images, labels = photos()[:batch], parse_labels(DEFAULT_LABELS)
    embedder.encode_images(images)  # warm-up of the image tower at this batch size

    def seconds() -> float:
        start = time.perf_counter()
        embedder.zero_shot(images, labels)
        return time.perf_counter() - start

    first = seconds()
    again = statistics.median(seconds() for _ in range(repeats))
    return f"| {spec} | {batch} | {len(labels)} | {first * 1000:.0f} | {again * 1000:.0f} | {first / again:.1f}x |"


OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"  # dev data beside the checkout


def int8_check(key: str, batches: list[int], rounds: int, repeats: int) -> None:
    """Plain fp32 (the reference), the bf16 fast path and the int8 path (TWINSIGHT_PRECISION=int8: both through
    `embed_pixels` with the app's two streams), alternated `rounds` times per batch: medians (min-max) of images/s;
    then each one's agreement with fp32 on 200 real-photo crops."""
    spec = MODELS[key]()
    embedders, load = {}, {}
    for name in ("fp32", "bf16", "int8"):
        torch.manual_seed(0)  # the same random ViT weights in all three, so their agreement is a numerics check
        start = time.perf_counter()  # loading, quantizing (int8) and tracing
        embedders[name] = plain_fp32(spec) if name == "fp32" else create_embedder(spec, device="cpu", precision=name)
        load[name] = time.perf_counter() - start
    print(f"|   load {key} | " + " | ".join(f"{name} {seconds:.1f} s" for name, seconds in load.items()) + " |", flush=True)
    for batch in batches:
        rates = {name: [] for name in embedders}
        for name, embedder in embedders.items():
            images_per_second(embedder, batch, 1)  # warm-up
        for _ in range(rounds):
            for name, embedder in embedders.items():
                rates[name].append(images_per_second(embedder, batch, repeats, warm_up=0))
        medians = {name: statistics.median(values) for name, values in rates.items()}
        cells = " | ".join(f"{medians[name]:.1f} ({min(v):.0f}-{max(v):.0f})" for name, v in rates.items())
        print(f"| {key} | {batch} | {cells} | {medians['int8'] / medians['fp32']:.2f}x | "
              f"{medians['int8'] / medians['bf16']:.2f}x |", flush=True)
    reference = embedders["fp32"].encode_images(photos())
    for name in ("bf16", "int8"):
        vectors = embedders[name].encode_images(photos())
        agree = neighbour_agreement(reference, vectors, k=10)
        print(f"|   agreement {key} {name} | min cosine {(reference * vectors).sum(1).min():.4f} | identical top-10 "
              f"{agree.identical:.1%} | up to near ties {agree.identical_up_to_ties:.1%} |", flush=True)


def crowded_gallery_agreement(characters: int = 60, precision: str = "bf16") -> str:
    """On a crowded gallery (every drawing of `characters` Omniglot characters, dev data): neighbour agreement,
    and what matters to a user, retrieval accuracy (precision@10 and nearest-neighbour label accuracy) in each
    precision."""
    folders = sorted(p for p in OMNIGLOT.glob("*/*/*") if p.is_dir())[:characters]
    if not folders:
        return f"(skipped: no Omniglot dev data at {OMNIGLOT})"
    items = [str(path) for folder in folders for path in sorted(folder.glob("*.png"))]
    labels = np.array([Path(item).parent.name + Path(item).parent.parent.name for item in items])

    def accuracy(vectors):
        scores = vectors @ vectors.T
        np.fill_diagonal(scores, -np.inf)
        top = top_k(scores, 10)
        return (labels[top] == labels[:, None]).mean(), (labels[top[:, 0]] == labels).mean()

    reference = plain_fp32("effnet-lite0").encode_images(items)
    fast = create_embedder("effnet-lite0", device="cpu", precision=precision).encode_images(items)
    agree = neighbour_agreement(reference, fast, k=10)
    (p32, nn32), (p16, nn16) = accuracy(reference), accuracy(fast)
    return (f"{len(items)} drawings of {len(folders)} characters: identical top-10 sets {agree.identical:.1%}, up to near "
            f"ties {agree.identical_up_to_ties:.1%}, overlap {agree.overlap:.1%}; precision@10 fp32 {p32:.4f} vs {precision} "
            f"{p16:.4f}; nearest-neighbour label accuracy fp32 {nn32:.4f} vs {precision} {nn16:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--compile", action="store_true", help="measure torch.compile against eager instead")
    parser.add_argument("--busy-python", action="store_true", help="measure eager against traced beside a busy Python thread instead")
    parser.add_argument("--zero-shot", action="store_true", help="measure a zero-shot call, first and repeated, instead")
    parser.add_argument("--int8", action="store_true", help="measure fp32, bf16 and int8 in alternating rounds instead")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (--int8)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_fast_bf16()}, "
          f"int8: {cpu_has_fast_int8()}")
    if args.int8:
        print("| model | batch | fp32 img/s (min-max) | bf16 fast path | int8 | int8 / fp32 | int8 / bf16 |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for key in args.models:
            int8_check(key, args.batches, args.rounds, args.repeats)
        print("\ncrowded gallery, int8 against fp32 (effnet-lite0):", crowded_gallery_agreement(precision="int8"))
        return
    side_check = {"compile": (compile_check, "| model | batch | first compile s | alone eager img/s | alone compiled img/s | "
                              "ratio | embed_pixels eager img/s | embed_pixels compiled img/s | ratio |"),
                  "busy_python": (busy_python_check, "| model | batch | eager img (text)/s | eager beside busy Python | traced img (text)/s | "
                                  "traced beside busy Python | traced / eager, busy |"),
                  "zero_shot": (zero_shot_check, "| model | images | labels | first call ms | later calls ms | ratio |")}
    for option, (check, header) in side_check.items():
        if getattr(args, option):
            print(header)
            print("| --- " * (header.count("|") - 1) + "|")
            for key in args.models:
                for batch in args.batches:
                    print(check(MODELS[key](), batch), flush=True)
            return
    print("fp32: the plain reference (NCHW, one stream on all threads); the fast path adds each column's trick in turn;")
    print("'+ traced': the forward as a TorchScript graph; '+ 2 streams' is the app's default on a CPU: two batches (or two")
    print("halves of one) at once, each on half the threads")
    print("| model | batch | fp32 img/s | bf16 img/s | + channels_last img/s | + traced img/s | + 2 streams (fast path) img/s | fast path / fp32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in args.models:
        spec = MODELS[key]()
        fast = create_embedder(spec, device="cpu", precision="bf16")  # the app's: channels_last where convolutional
        variants = [plain_fp32(spec), one_stream(spec, "bf16")]
        variants.append(one_stream(spec, "bf16", channels_last=True) if fast.channels_last else None)
        variants.append(one_stream(spec, "bf16", channels_last=fast.channels_last, traced=True))
        for batch in args.batches:
            speeds = [images_per_second(v, batch, args.repeats) if v is not None else None for v in variants + [fast]]
            cells = " | ".join(f"{x:.1f}" if x is not None else "(no convolutions)" for x in speeds)
            print(f"| {key} | {batch} | {cells} | {speeds[-1] / speeds[0]:.2f}x |", flush=True)
        del fast, variants
    print("\nagreement of the fast path (bf16, channels_last) with plain fp32, effnet-lite0 real weights, gallery of 200 crops of 10 real photos, top-10 neighbours:")
    print("| precision | min cosine | identical sets | identical up to near ties (< 0.005) | mean overlap |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for precision in ("bf16", "fp16"):  # fp16: the CUDA default, run here on the CPU for its numerics only
        cos, agree = agreement("effnet-lite0", precision)
        print(f"| {precision} | {cos:.4f} | {agree.identical:.1%} | {agree.identical_up_to_ties:.1%} | {agree.overlap:.1%} |")
    print("\ncrowded gallery, bf16 against fp32 (effnet-lite0):", crowded_gallery_agreement())

if __name__ == "__main__":
    main()
