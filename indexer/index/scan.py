"""Search helpers of the hnswlib store: exact scans of the float16 copy, the Hamming shortlist, and ef tuning.

hnswlib holds the float32 vectors; the linear scans of exact and label-filtered search read a float16 copy
(scan_copy.py: memory-mapped from the last save, so it is not a second copy in the process's memory). float16 scores of unit vectors are off by at most ~1e-3, so
every item scored within SCAN_MARGIN of the k-th best is re-scored in float32: the answer stays exact.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..brute import normalize, recall_at_k, top_k
from ..hamming import BinaryCodec, hamming_search
from ..errors import UserInputError
from .scan_copy import ScanCopy
from .table import Positions
from .types import EF_STEPS

SCAN_MARGIN = 2e-3

Float32At = Callable[[Sequence[int]], np.ndarray]  # float32 vectors at these positions (hnswlib's copy)


def half_precision_scores(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    """float16 rows times a float32 query, as float32 scores (torch: numpy has no fast float16 product)."""
    import torch  # heavy: loaded by the first exact scan, not by `import indexer`

    return (torch.from_numpy(vectors) @ torch.from_numpy(q.astype(np.float16))).float().numpy()


def exact_top_k(vectors: ScanCopy, float32_at: Float32At, q: np.ndarray, k: int,
                allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positions, cosine scores) of the k best of `vectors` (the float16 copy, one row per position), or of the
    `allowed` positions only, best first: a float16 scan, then float32 scores of the candidates near the k-th."""
    positions = np.arange(len(vectors)) if allowed is None else allowed
    if len(positions) == 0:
        return positions, np.zeros(0, dtype=np.float32)
    k = min(k, len(positions))
    if allowed is None:
        rough = np.concatenate([half_precision_scores(part, q) for part in vectors.parts()])
    else:
        rough = half_precision_scores(vectors.rows(allowed), q)
    kth = np.partition(rough, len(rough) - k)[len(rough) - k]
    candidates = positions[rough >= kth - SCAN_MARGIN]
    scores = float32_at(candidates) @ q
    best = top_k(scores, k)[0]
    return candidates[best], scores[best]


def hamming_top_k(codec: BinaryCodec | None, codes: np.ndarray, vectors: ScanCopy, float32_at: Float32At,
                  q: np.ndarray, k: int, allowed: np.ndarray | None, rerank: int) -> tuple[np.ndarray, np.ndarray]:
    """The `rerank` nearest codes by Hamming distance (of the allowed positions), re-ranked by cosine."""
    if codec is None:
        raise UserInputError("Hamming mode is off for this index: call index.enable_hamming() first "
                         "(or build with --hamming).")
    candidates = hamming_search(codec.encode(q)[0], codes if allowed is None else codes[allowed], max(k, rerank))
    if allowed is not None:
        candidates = allowed[candidates]
    return exact_top_k(vectors, float32_at, q, k, np.sort(candidates))  # cosine re-rank of the shortlist


def choose_ef(graph, position: Positions, exact: Callable[[np.ndarray, int], np.ndarray], items: np.ndarray,
              start_ef: int, target_recall: float, k: int,
              rng: np.random.Generator) -> tuple[int, float, int, tuple[tuple[int, float], ...]]:
    """The smallest of EF_STEPS from `start_ef` up whose estimated recall@k on the hnswlib `graph` reaches
    `target_recall` (or the largest), as (ef, its recall, probes, every (ef, recall) measured). `items` are
    float32 vectors of random items; `exact(probe, k)` gives the true top-k positions. Leaves the graph at the ef
    chosen.

    A probe is a random item moved away from itself, in a random direction, by its distance to its nearest other
    item: as far from the gallery as the gallery's items are from each other, and not a node of the graph. (An
    item's own vector is found with its neighbours through its links and overstates recall: 0.998 against 0.986
    for fresh queries at ef=96 and 100k clustered items.) On clustered vectors this estimate is lower than fresh
    queries' recall, so the ef chosen errs towards recall (docs/BENCHMARKS.md, 3). Costs one exact scan per probe
    (~6 ms each at 100k items, ~120 ms at 1M)."""
    steps = [start_ef] + [ef for ef in EF_STEPS if ef > start_ef]
    graph.set_ef(max(steps[0], k))  # an item's own neighbours are easy to find
    _, distances = graph.knn_query(items, k=2, num_threads=-1)  # the item itself, then its nearest
    gaps = np.sqrt(np.maximum(2.0 * distances[:, 1], 0.0))  # unit vectors: |a - b|^2 = 2 (1 - cos)
    directions = rng.normal(size=items.shape).astype(np.float32)
    directions -= (directions * items).sum(axis=1, keepdims=True) * items  # orthogonal to the item
    probes = normalize(items + gaps[:, None] * normalize(directions))
    truth = np.array([exact(probe, k) for probe in probes])  # positions, (probes, k)
    recalls: dict[int, float] = {}  # step index -> estimated recall

    def reaches(i: int) -> bool:
        if i not in recalls:
            graph.set_ef(max(steps[i], k))
            found, _ = graph.knn_query(probes, k=k, num_threads=-1)
            recalls[i] = recall_at_k([position.of(row) for row in found], truth)
        return recalls[i] >= target_recall

    # Double ef until the target is reached, then bisect the steps in between: a few measurements at
    # large ef instead of all of them (on hard data every step falls short and each costs more).
    below, above, i = -1, len(steps) - 1, 0
    while not reaches(i):
        below = i
        if i == len(steps) - 1:
            break
        i = next((j for j in range(i + 1, len(steps)) if steps[j] >= 2 * steps[i]), len(steps) - 1)
    else:
        above = i
        while above - below > 1:
            middle = (below + above) // 2
            below, above = (below, middle) if reaches(middle) else (middle, above)
    graph.set_ef(steps[above])
    return steps[above], recalls[above], len(probes), tuple((steps[i], recalls[i]) for i in sorted(recalls))
