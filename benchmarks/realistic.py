"""Realistic embedding sets of any size: a generator fitted to real augmented embeddings, sampled and cached.

    nice -n 5 .venv/bin/python benchmarks/realistic.py --sizes 1000000 --dims 512 1280   # writes CACHE/gen-*.npy

The real set (benchmarks/realistic_embed.py: Omniglot drawings, signatures, faces and photos, each seen ~15-200
times through EfficientNet-Lite0) is groups of near-duplicates (the views of one image) around concepts (a
character drawn by 20 people, one writer's signatures). The generator keeps both levels:

- concepts: k-means (on the top principal components) of the groups' centroids; each cluster is a Gaussian with
  the sample mean and covariance of its centroids;
- a new group copies the shape of a real group drawn at random (its template): a centre from the template's
  cluster Gaussian, and as many views as the template has, deviating from the centre by a Gaussian with the
  template's own covariance of views about their centroid (so each group keeps the few directions augmentation
  moves an embedding in, rather than noise in all 1280);
- rows are L2-normalised, shuffled, and `queries` held out as fresh queries from the same distribution.

A Gaussian with a sample covariance is sampled exactly as a random combination of the sample's deviations
(N(0, 1/(m-1)) weights), so no covariance is ever formed or factored, whatever the dimension.

512-d: no 512-d model runs offline (CLIP/ViT weights need the hub), so the 512-d "real" set is the 1280-d one
projected onto its top 512 principal directions (uncentred, so the common offset stays) and re-normalised; the
generator is fitted to that. Generated sets are cached as CACHE/gen-{dim}-{n}.npy and gen-{dim}-{n}-queries.npy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from indexer.brute import normalize  # noqa: E402
from realistic_embed import CACHE, load_real  # noqa: E402

STORED_QUERIES = 10_000  # held out with every cached set; benchmarks use the first --queries of them
CLUSTERS = 64  # concept clusters: ~100 real images each, enough centroids for a covariance that is not a copy


def principal_directions(vectors: np.ndarray, count: int) -> np.ndarray:
    """(dim, count): the top `count` principal directions of the rows (eigenvectors of their covariance)."""
    centred = vectors - vectors.mean(axis=0)
    values, vecs = np.linalg.eigh(centred.T.astype(np.float64) @ centred)
    return vecs[:, np.argsort(values)[::-1][:count]].astype(np.float32)


def real_set(dim: int, cache: Path = CACHE, prefix: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The real augmented embeddings in `dim` dimensions, with the source image (group) of each row."""
    vectors, groups, _ = load_real(cache, prefix)
    if dim == vectors.shape[1]:
        return vectors, groups
    if dim > vectors.shape[1]:
        raise SystemExit(f"The real embeddings have {vectors.shape[1]} dimensions; {dim} cannot be made from them.")
    return normalize(vectors @ principal_directions(vectors, dim)), groups


def kmeans(points: np.ndarray, k: int, seed: int, steps: int = 30) -> np.ndarray:
    """Lloyd's k-means from k random points (small inputs: a few thousand centroids); returns each point's cluster."""
    rng = np.random.default_rng(seed)
    centres = points[rng.choice(len(points), k, replace=False)]
    for _ in range(steps):
        distances = (points**2).sum(1)[:, None] - 2 * points @ centres.T + (centres**2).sum(1)[None, :]
        assigned = distances.argmin(axis=1)
        for c in range(k):
            members = points[assigned == c]
            centres[c] = members.mean(axis=0) if len(members) else points[rng.integers(len(points))]
    return assigned


@dataclass
class Generator:
    """What sampling needs: per concept cluster its centroid mean and scaled deviations; per real group (template)
    its cluster and its scaled view deviations (rows offsets[g]:offsets[g+1] of `views`)."""

    cluster_mean: np.ndarray  # (k, dim)
    cluster_spread: list[np.ndarray]  # per cluster (m, dim): centroid deviations / sqrt(m - 1)
    template_cluster: np.ndarray  # (groups,)
    views: np.ndarray  # (rows, dim): view deviations / sqrt(size - 1), grouped
    offsets: np.ndarray  # (groups + 1,)

    @property
    def dim(self) -> int:
        return self.views.shape[1]


def scaled_deviations(rows: np.ndarray) -> np.ndarray:
    """Deviations from the mean over sqrt(m - 1): random N(0, 1) combinations of them have the rows' covariance."""
    return (rows - rows.mean(axis=0)) / np.sqrt(max(1, len(rows) - 1))


def fit(vectors: np.ndarray, groups: np.ndarray, clusters: int = CLUSTERS, seed: int = 0) -> Generator:
    order = np.argsort(groups, kind="stable")
    vectors, groups = vectors[order], groups[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    offsets = np.r_[starts, len(groups)]
    centroids = np.add.reduceat(vectors, starts) / np.diff(offsets)[:, None]
    views = np.concatenate([scaled_deviations(vectors[a:b]) for a, b in zip(offsets[:-1], offsets[1:])])
    features = (centroids - centroids.mean(0)) @ principal_directions(centroids, min(64, vectors.shape[1]))
    assigned = kmeans(features, min(clusters, len(centroids)), seed)
    members = [centroids[assigned == c] for c in range(assigned.max() + 1)]
    return Generator(np.stack([m.mean(0) if len(m) else np.zeros(vectors.shape[1]) for m in members]),
                     [scaled_deviations(m) for m in members], assigned, views.astype(np.float32), offsets)


def sample(generator: Generator, n: int, seed: int) -> np.ndarray:
    """n unit vectors, whole groups (the last one cut at n), in group order."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, generator.dim), dtype=np.float32)
    filled = 0
    while filled < n:
        g = rng.integers(len(generator.template_cluster))
        c = generator.template_cluster[g]
        spread = generator.cluster_spread[c]
        centre = generator.cluster_mean[c] + rng.standard_normal(len(spread)) @ spread
        deviations = generator.views[generator.offsets[g] : generator.offsets[g + 1]]
        size = min(len(deviations), n - filled)
        views = centre + rng.standard_normal((size, len(deviations))).astype(np.float32) @ deviations
        out[filled : filled + size] = normalize(views)  # group by group: no second copy of a 5 GB set
        filled += size
    return out


def hold_out(count: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(gallery rows, query rows) of a set of `count`: `queries` random rows held out, the rest shuffled (so no
    group is inserted in one run, for real and generated sets alike)."""
    order = np.random.default_rng(seed).permutation(count)
    return order[queries:], order[:queries]


def set_paths(n: int, dim: int, cache: Path) -> tuple[Path, Path]:
    return cache / f"gen-{dim}-{n}.npy", cache / f"gen-{dim}-{n}-queries.npy"


def make_set(n: int, dim: int, cache: Path = CACHE, stored_queries: int = STORED_QUERIES, prefix: bool = False) -> None:
    """Fit the generator to all the real embeddings in `dim` dimensions, sample n + stored_queries and cache them,
    with a note of what they were fitted to (gen-{dim}-{n}.json)."""
    vectors, groups = real_set(dim, cache, prefix)
    fitted_to = {"real_views": len(vectors), "real_images": len(np.unique(groups)), "clusters": CLUSTERS, "seed": n}
    generated = sample(fit(vectors, groups, CLUSTERS), n + stored_queries, seed=n)
    del vectors, groups
    gallery_path, queries_path = set_paths(n, dim, cache)
    rows, held_out = hold_out(len(generated), stored_queries, seed=1)
    temporary = gallery_path.with_suffix(".tmp.npy")  # a cached set is whole or absent
    gallery = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(n, dim))
    np.take(generated, rows, axis=0, out=gallery, mode="clip")  # straight into the file: 1M x 1280 is 5 GB
    gallery.flush()
    del gallery
    np.save(queries_path, generated[held_out])
    gallery_path.with_suffix(".json").write_text(json.dumps(fitted_to))
    os.replace(temporary, gallery_path)
    print(f"wrote {n:,} x {dim} and {stored_queries:,} held-out queries: {gallery_path} (fitted to {fitted_to})", flush=True)


def load_set(n: int, dim: int, queries: int, cache: Path = CACHE) -> tuple[np.ndarray, np.ndarray]:
    """(gallery (n, dim), queries (queries, dim)) of the realistic set, made and cached on first use (made in this
    process, its freed temporaries lower the "memory added" search.py reads: run again for that figure). The gallery
    is read into memory, as the isotropic one is generated there, so memory figures compare."""
    gallery_path, queries_path = set_paths(n, dim, cache)
    if not gallery_path.exists():
        make_set(n, dim, cache)
    held_out = np.load(queries_path, allow_pickle=False)
    if queries > len(held_out):
        raise SystemExit(f"{queries_path} holds {len(held_out)} queries; ask for fewer")
    return np.load(gallery_path, allow_pickle=False), held_out[:queries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 1280])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--prefix", action="store_true", help="fit to the real views embedded so far (a run cut short)")
    args = parser.parse_args()
    for dim in args.dims:
        for n in args.sizes:
            make_set(n, dim, args.cache, prefix=args.prefix)


if __name__ == "__main__":
    main()
