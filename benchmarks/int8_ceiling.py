"""How fast can int8 make a ViT-B-32 image tower on this CPU? The bound behind issue #22's 6x-fp32 target.

    .venv/bin/python benchmarks/int8_ceiling.py [--rounds 5] [--batch 32]

Two measurements, one thread, alternating rounds, medians:
1. Each Linear shape of ViT-B-32 (50 tokens an image) as a bf16 product (oneDNN, AMX-bf16 where present) against
   oneDNN's dynamic int8 product (AMX-int8 or VNNI), with and without the bf16 <-> fp32 casts around it.
2. The share of the bf16 tower's time spent in those products (torch.profiler).

Amdahl's law then bounds the int8 tower: time = (1 - share) + share / speed-up of the product, even if quantizing
cost nothing. Random weights: speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

SHAPES = {"attention in (qkv)": (768, 2304), "attention out": (768, 768), "MLP up": (768, 3072),
          "MLP down": (3072, 768)}
LINEAR_OPS = ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul")


def milliseconds(fn, repeats: int = 10) -> float:
    for _ in range(2):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def products(tokens: int, rounds: int) -> list[tuple[str, float, float, float]]:
    torch.backends.quantized.engine = "onednn"
    rows = []
    for name, (k, n) in SHAPES.items():
        x, w, b = torch.randn(tokens, k), torch.randn(n, k), torch.randn(n)
        xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices
            qw = torch.quantize_per_channel(w, (w.abs().amax(1) / 127).double(), torch.zeros(n, dtype=torch.long),
                                            0, torch.qint8)
            packed = torch.ops.quantized.linear_prepack(qw, b)
        runs = {"bf16": lambda: F.linear(xb, wb, bb),
                "int8": lambda: torch.ops.quantized.linear_dynamic(x, packed, False),
                "int8+casts": lambda: torch.ops.quantized.linear_dynamic(xb.float(), packed, False).bfloat16()}
        times = {key: [] for key in runs}
        for _ in range(rounds):
            for key, fn in runs.items():
                times[key].append(milliseconds(fn))
        med = {key: statistics.median(v) for key, v in times.items()}
        rows.append((name, med["bf16"], med["int8"], med["int8+casts"]))
    return rows


def linear_share(batch: int) -> float:
    import open_clip

    tower = open_clip.create_model("ViT-B-32", pretrained=None).visual.eval().to(torch.bfloat16)
    pixels = torch.randn(batch, 3, 224, 224).bfloat16()
    with torch.no_grad():
        tower(pixels)
        with torch.profiler.profile() as prof:
            for _ in range(3):
                tower(pixels)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in LINEAR_OPS) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokens = args.batch * 50
    rows = products(tokens, args.rounds)
    print(f"| ViT-B-32 Linear, {tokens} tokens | bf16 ms | dynamic int8 ms | int8 / bf16 speed | with bf16 casts |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, bf16, int8, cast in rows:
        print(f"| {name} | {bf16:.2f} | {int8:.2f} | {bf16 / int8:.2f}x | {bf16 / cast:.2f}x |")
    speed = sum(r[1] for r in rows) / sum(r[2] for r in rows)
    share = linear_share(args.batch)
    ceiling = 1 / ((1 - share) + share / speed)
    print(f"\nall four products: int8 {speed:.2f}x bf16; Linear share of the bf16 tower: {share:.0%}")
    print(f"ceiling for the int8 tower, quantizing for free: {ceiling:.2f}x the bf16 tower")


if __name__ == "__main__":
    main()
