"""Exact (brute-force) cosine search: the answer for small galleries and the reference for recall tests."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation as float32 (zero rows stay zero)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values of each row of `scores`, best first."""
    scores = np.atleast_2d(scores)
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def exact_search(queries: np.ndarray, vectors: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of each query over `vectors` (both L2-normalised).

    Returns (positions, similarities), each (n_queries, min(k, n)), best first. Queries are processed in
    chunks so the score matrix stays small.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    positions, similarities = [], []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ vectors.T
        best = top_k(scores, k)
        positions.append(best)
        similarities.append(np.take_along_axis(scores, best, axis=1))
    if not positions:
        return np.zeros((0, 0), dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(positions), np.concatenate(similarities)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of `truth` (ids) present in the same row of `found`."""
    hits = sum(len(set(map(int, f)) & set(map(int, t))) for f, t in zip(found, truth))
    return hits / max(1, truth.size)


def clustered_unit_vectors(n: int, dim: int, clusters: int = 50, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """Synthetic gallery for recall measurements: unit vectors around `clusters` fixed centres (the same
    centres for every seed, so another seed gives fresh queries from the same distribution)."""
    centres = np.random.default_rng(1234).normal(size=(clusters, dim))
    rng = np.random.default_rng(seed)
    return normalize(centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, dim)))


@dataclass(frozen=True)
class NeighbourAgreement:
    """How far a fast path's top-k neighbours match a reference's, over the queries of one gallery."""

    identical: float  # share of queries with the very same top-k set
    identical_up_to_ties: float  # ... counting as equal items whose reference scores are within `tie` of the k-th
    overlap: float  # mean share of the reference top-k found by the fast path
    tie: float


def neighbour_agreement(reference: np.ndarray, fast: np.ndarray, k: int = 10, tie: float = 0.005) -> NeighbourAgreement:
    """Compare the top-k neighbours (self excluded) of every row of a gallery embedded twice: reference (fp32)
    and fast (e.g. bf16). A swap between two items whose reference cosine scores differ by less than `tie`
    is a near tie: below the fast path's numeric resolution, so not counted as a disagreement."""
    ref_scores, fast_scores = reference @ reference.T, fast @ fast.T
    np.fill_diagonal(ref_scores, -np.inf)
    np.fill_diagonal(fast_scores, -np.inf)
    ref_top, fast_top = top_k(ref_scores, k), top_k(fast_scores, k)
    identical = up_to_ties = overlap = 0.0
    for row, (a, b) in enumerate(zip(ref_top, fast_top)):
        a, b = set(a.tolist()), set(b.tolist())
        overlap += len(a & b) / k
        identical += a == b
        kth = ref_scores[row, ref_top[row, -1]]
        up_to_ties += all(abs(ref_scores[row, j] - kth) < tie for j in a ^ b)
    n = max(1, len(reference))
    return NeighbourAgreement(identical / n, up_to_ties / n, overlap / n, tie)
