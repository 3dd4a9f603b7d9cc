"""Benchmark 2: index build end to end (decode, resize, embed, insert) against model-only throughput.

    .venv/bin/python benchmarks/build_throughput.py [--images 256] [--model effnet-lite0] [--workers N]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/build_throughput.py --workers 1   # decoding on a core of its own

Makes a `datasets` dataset of JPEG-encoded photos of realistic size (1024-1600 px, from scikit-image's photos
with random crops, flips and scales), saves it to disk, builds an index from it with `build_index`, and compares the
build's images/s with the model alone on preprocessed batches of the same size, measured in the same process.
Goal: the build reaches at least 85% of model-only throughput (decoding never starves the model).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from indexer import build_index, load_embedder  # noqa: E402
from model_throughput import images_per_second  # noqa: E402
from scratch import scratch_dir  # noqa: E402


def jpeg_dataset(n: int, folder: Path) -> Path:
    import datasets
    import skimage.data

    photos = [getattr(skimage.data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field")]
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        photo = Image.fromarray(photos[i % len(photos)]).convert("RGB")
        width = int(rng.integers(1024, 1600))
        image = photo.resize((width, int(width * rng.uniform(0.66, 0.8))), Image.BICUBIC)
        if i % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        records.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    dataset = datasets.Dataset.from_dict({"image": records, "label": [f"photo{i % len(photos)}" for i in range(n)]}, features=features)
    out = folder / "jpeg-photos"
    dataset.save_to_disk(str(out))
    mean_kb = statistics.mean(len(r["bytes"]) for r in records) / 1024
    print(f"dataset: {n} JPEGs, mean {mean_kb:.0f} KB, saved with datasets to {out}")
    return out


def per_image_costs(dataset: Path, embedder, n: int = 64) -> None:
    """CPU milliseconds per image of each build step, one thread at a time, and the build/model bound they set
    when decoding shares the model's cores: model / (model + decode + preprocess)."""
    import datasets
    import torch

    from indexer import load_image

    rows = datasets.load_from_disk(str(dataset)).cast_column("image", datasets.Image(decode=False))
    blobs = [rows[i]["image"]["bytes"] for i in range(min(n, len(rows)))]

    def cpu_ms(step, items) -> float:
        start = time.process_time()
        for item in items:
            step(item)
        return (time.process_time() - start) / len(items) * 1000

    decoded = [load_image(b, draft_side=embedder.draft_side) for b in blobs]
    decode = cpu_ms(lambda b: load_image(b, draft_side=embedder.draft_side), blobs)
    preprocess = cpu_ms(embedder.preprocess, decoded)
    pixels = torch.randn(embedder.batch_size, 3, 224, 224)
    model = cpu_ms(lambda _: embedder.embed_pixels(pixels), range(8)) / embedder.batch_size
    print(f"CPU ms per image: decode (reduced scale) {decode:.1f}, preprocess {preprocess:.1f}, model {model:.1f} "
          f"(on {embedder.model_workers} streams x {embedder.streams.threads} threads); bound when they share the cores: "
          f"{model / (model + decode + preprocess):.0%} of model-only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--model", default="effnet-lite0")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    work = scratch_dir()
    dataset = jpeg_dataset(args.images, work)
    embedder = load_embedder(args.model)
    before = images_per_second(embedder, embedder.batch_size, repeats=4)
    index = build_index(str(dataset), model=embedder, out=work / "index", workers=args.workers, resume=False)
    report = index.build_report
    after = images_per_second(embedder, embedder.batch_size, repeats=4)
    model_ips = statistics.mean([before, after])
    print(f"model only ({embedder.description}, batch {embedder.batch_size}): {model_ips:.1f} images/s "
          f"(before {before:.1f}, after {after:.1f})")
    print(f"build end to end: {report.embedded} images in {report.seconds:.1f} s = {report.images_per_second:.1f} images/s; "
          f"waited for the model {report.model_seconds:.1f} s, for decoding {report.decode_wait_seconds:.2f} s")
    print(f"build / model-only = {report.images_per_second / model_ips:.0%} (goal >= 85%)")
    per_image_costs(dataset, embedder)


if __name__ == "__main__":
    main()
