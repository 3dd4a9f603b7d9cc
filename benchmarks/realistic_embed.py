"""Real augmented embeddings: every real image available offline, seen many times, through EfficientNet-Lite0.

    nice -n 5 .venv/bin/python benchmarks/realistic_embed.py [--shared ../shared/data] [--cache /tmp/twinsight-realistic]

Sources: the Omniglot drawings, the SigComp2011 signatures and the dev face photos under `--shared` (each read in
place, never copied: see the READMEs there), and scikit-image's bundled photos, which are always there, so the
script still runs (on ~4k views) without ../shared. Strokes get indexer.augment's stroke views (rotation, shear,
scale, shift, pen width), photos a random crop (indexer.augment.random_crops) and the photo views (crop, mirror,
light, colour, slight rotation): a source image and its views are a group of near-duplicates, as re-scans and
re-shoots are in a real gallery.

The embeddings are cached in chunks under CACHE/real-effnet-lite0/ (resumable: a rerun embeds only the missing
chunks; every view is seeded by its source and view number, so a chunk comes out the same whenever it is made).
Never commit them: they derive from research-use data. benchmarks/realistic.py fits the generator to them.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.augment import PHOTO_NAMES, augment_photo, augment_strokes, random_crops  # noqa: E402
from indexer.images import load_image  # noqa: E402
from PIL import Image  # noqa: E402

CACHE = Path(os.environ.get("TWINSIGHT_REALISTIC_CACHE", "/tmp/twinsight-realistic"))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = "effnet-lite0"
EXTRA_PHOTOS = ("cat", "retina", "clock", "cell")  # scikit-image photos that load offline, beyond PHOTO_NAMES
CHUNK = 1024  # views per cached file: a crash loses at most ~30 s of work
MAX_SIDE = {"omniglot": 256, "signature": 256, "face": 512, "photo": 768}  # photos get cropped to 1/3-1/1 first


@dataclass(frozen=True)
class Source:
    """One real image: where it comes from (`kind`), how to load it and how many augmented views to make."""

    kind: str  # omniglot | signature | face | photo
    ref: str  # a file path, or "skimage:NAME"
    views: int


def find_sources(shared: Path, stroke_views: int, face_views: int, photo_views: int) -> list[Source]:
    """Every real image, in a fixed order (so chunk i always holds the same views)."""
    found = []
    for kind, pattern, views in (("omniglot", "omniglot/**/*.png", stroke_views),
                                 ("signature", "signatures-dev/**/*.png", stroke_views),
                                 ("face", "faces-dev/*.jpg", face_views)):
        found += [Source(kind, str(p), views) for p in sorted(shared.glob(pattern))]
    found += [Source("photo", f"skimage:{name}", photo_views) for name in PHOTO_NAMES + EXTRA_PHOTOS]
    return found


def load_source(source: Source) -> np.ndarray:
    """The source as an RGB array, its shorter side at most MAX_SIDE: the model sees 224 px anyway, and augmenting a
    600 px signature costs more than embedding it."""
    if source.ref.startswith("skimage:"):
        from skimage import data

        image = load_image(getattr(data, source.ref.split(":", 1)[1])())
    else:
        image = load_image(source.ref)
    scale = MAX_SIDE[source.kind] / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    return np.asarray(image)


def make_view(source: Source, image: np.ndarray, number: int, view: int):
    """View `view` of source `number`, seeded by both: the same view whenever (and in whatever chunk) it is made."""
    seed = number * 10_007 + view
    rng = random.Random(seed)
    if source.kind in ("omniglot", "signature"):
        return augment_strokes(load_image(image), rng)
    if source.kind == "photo":  # few photos, many views: crops first, so views differ more than by colour
        image = random_crops([image], per_image=1, seed=seed)[0]
    return augment_photo(load_image(image), rng)


def jobs(sources: list[Source]) -> list[tuple[int, int]]:
    """(source number, view number) of every view, in passes over the sources: any prefix of the list (what a run
    cut short has embedded) holds about the same share of every source's views."""
    every = [(s, v) for s, source in enumerate(sources) for v in range(source.views)]
    return sorted(every, key=lambda sv: (sv[1] / sources[sv[0]].views, sv[0]))


def embed_chunk(embedder, sources: list[Source], chunk: list[tuple[int, int]], batch: int,
                loaded: dict[int, np.ndarray]) -> np.ndarray:
    """Embeddings of a chunk's views; `loaded` keeps every decoded source (~0.6 GB in all), as each pass needs them all."""
    views = []
    for s, v in chunk:
        if s not in loaded:
            loaded[s] = load_source(sources[s])
        views.append(make_view(sources[s], loaded[s], s, v))
    return embedder.encode_images(views, batch_size=batch).astype(np.float32)


def cache_dir(cache: Path) -> Path:
    return cache / f"real-{MODEL}"


def embed_all(sources: list[Source], cache: Path, batch: int, limit: int | None) -> None:
    from indexer import create_embedder

    folder = cache_dir(cache)
    todo = jobs(sources)[:limit]
    check_manifest(folder, sources, len(todo))
    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
    missing = [i for i, chunk in enumerate(chunks) if cached_rows(folder, i) != len(chunk)]
    print(f"{len(sources):,} real images, {len(todo):,} views in {len(chunks)} chunks; {len(missing)} to embed", flush=True)
    if not missing:
        return
    embedder = create_embedder(MODEL)
    start, done, loaded = time.perf_counter(), 0, {}
    for number, i in enumerate(missing):
        vectors = embed_chunk(embedder, sources, chunks[i], batch, loaded)
        path = folder / f"chunk-{i:05d}.npy"
        np.save(path.with_suffix(".tmp.npy"), vectors)
        os.replace(path.with_suffix(".tmp.npy"), path)  # a chunk file is whole or absent
        done += len(vectors)
        rate = done / (time.perf_counter() - start)
        left = sum(len(chunks[j]) for j in missing[number + 1 :])
        print(f"chunk {i + 1}/{len(chunks)}: {rate:.0f} views/s, ~{left / rate / 60:.0f} min left", flush=True)


def cached_rows(folder: Path, i: int) -> int:
    path = folder / f"chunk-{i:05d}.npy"
    return len(np.load(path, mmap_mode="r", allow_pickle=False)) if path.exists() else -1


def check_manifest(folder: Path, sources: list[Source], views: int) -> None:
    """Write what the chunks hold before making any; refuse to mix chunks made from other sources or view counts."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    listed = [s.__dict__ for s in sources]
    if path.exists() and json.loads(path.read_text())["sources"] != listed:
        raise SystemExit(f"{folder} holds views of other sources or view counts: use another --cache or delete it")
    counts: dict[str, dict[str, int]] = {}
    for source in sources:
        kind = counts.setdefault(source.kind, {"images": 0, "views": 0})
        kind["images"] += 1
        kind["views"] += source.views
    manifest = {"model": MODEL, "views": views, "chunk": CHUNK, "by_kind": counts, "sources": listed}
    path.write_text(json.dumps(manifest, indent=1))


def load_real(cache: Path = CACHE, prefix: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(vectors (n, 1280) float32, group (n,) source number of each view, kind of each source): the cached set, or
    with `prefix` the chunks embedded so far (a run still going or cut short: every pass covers every source)."""
    folder = cache_dir(cache)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise SystemExit(f"No real embeddings under {folder}: run  nice -n 5 .venv/bin/python benchmarks/realistic_embed.py")
    manifest = json.loads(manifest_path.read_text())
    sources = [Source(**s) for s in manifest["sources"]]
    todo = jobs(sources)[: manifest["views"]]
    chunks = range((len(todo) + CHUNK - 1) // CHUNK)
    have = next((i for i in chunks if cached_rows(folder, i) < 0), len(chunks))
    if have < len(chunks) and not prefix:
        raise SystemExit(f"{folder} is incomplete ({have}/{len(chunks)} chunks): rerun benchmarks/realistic_embed.py (it resumes)")
    vectors = np.concatenate([np.load(folder / f"chunk-{i:05d}.npy", allow_pickle=False) for i in range(have)])
    return vectors, np.array([s for s, _ in todo[: len(vectors)]], dtype=np.int32), [s.kind for s in sources]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared dev data (skipped if missing)")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--stroke-views", type=int, default=15, help="views per Omniglot drawing or signature")
    parser.add_argument("--face-views", type=int, default=100)
    parser.add_argument("--photo-views", type=int, default=200, help="views per scikit-image photo")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="embed only the first LIMIT views (a quick check)")
    args = parser.parse_args()
    if not args.shared.is_dir():
        print(f"{args.shared} not found: scikit-image's photos only", file=sys.stderr)
    sources = find_sources(args.shared, args.stroke_views, args.face_views, args.photo_views)
    embed_all(sources, args.cache, args.batch, args.limit)
    vectors, groups, _ = load_real(args.cache)
    print(f"{len(vectors):,} x {vectors.shape[1]} real embeddings of {len(set(groups.tolist())):,} images under {cache_dir(args.cache)}")


if __name__ == "__main__":
    main()
