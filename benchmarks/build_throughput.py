"""Benchmark 2: index build end to end (decode, resize, embed, insert) against model-only throughput.

    .venv/bin/python benchmarks/build_throughput.py [--images 256] [--model effnet-lite0]

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
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from indexer import build_index, load_embedder  # noqa: E402
from model_throughput import images_per_second  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--model", default="effnet-lite0")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
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
          f"model busy {report.model_seconds:.1f} s, waiting for decoding {report.decode_wait_seconds:.2f} s")
    print(f"build / model-only = {report.images_per_second / model_ips:.0%} (goal >= 85%)")


if __name__ == "__main__":
    main()
