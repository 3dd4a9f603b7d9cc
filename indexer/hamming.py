"""Hamming mode: embeddings as packed binary codes, searched by popcount, re-ranked by cosine.

A d-dimensional float32 embedding takes 4*d bytes; its sign-bit code takes d/8 bytes (32x smaller).
Search XORs the query code against every stored code and counts differing bits (`np.bitwise_count`),
keeps the `rerank` closest candidates, and orders those by exact cosine similarity.

Two code families:
- `SIGN`: bit i = (x_i > 0). No training; good when the embedding is roughly centred.
- `ITQ`: learned projection (Gong & Lazebnik, Iterative Quantization): centre, PCA to `bits` dims,
  then a rotation learned so that sign bits lose as little as possible. Better recall per bit, and the
  only way to get fewer bits than dimensions; needs at least `bits` training vectors. Default 128 bits.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .errors import UserInputError

WORD_BITS = 64
ITQ_DEFAULT_BITS = 128  # the fit is O(dim^2 * bits) per iteration: 128 learned bits fit in seconds to a minute


class CodeKind(str, enum.Enum):
    SIGN = "sign"
    ITQ = "itq"


@dataclass
class BinaryCodec:
    """Maps (n, dim) float vectors to (n, words) uint64 codes."""

    kind: CodeKind = CodeKind.SIGN
    bits: int = 0  # 0: one bit per dimension
    mean: np.ndarray | None = None  # ITQ: (dim,)
    projection: np.ndarray | None = None  # ITQ: (dim, bits) = PCA basis @ rotation

    @classmethod
    def fit(cls, vectors: np.ndarray, kind: CodeKind | str = CodeKind.SIGN, bits: int = 0,
            iterations: int = 30, seed: int = 0, sample: int = 10_000) -> "BinaryCodec":
        kind = CodeKind(kind)
        dim = vectors.shape[1]
        if kind is CodeKind.SIGN:
            bits = bits or dim
            if bits != dim:
                raise UserInputError(f"sign codes have one bit per dimension ({dim}); use kind='itq' for {bits} bits.")
            return cls(kind, bits)
        bits = bits or min(dim, ITQ_DEFAULT_BITS)
        if bits > dim or len(vectors) < bits:
            raise UserInputError(f"ITQ with {bits} bits needs bits <= dim ({dim}) and at least {bits} vectors (got {len(vectors)}).")
        rng = np.random.default_rng(seed)
        if len(vectors) > sample:  # the projection is learned from a random sample: fitting cost stays bounded
            vectors = vectors[rng.choice(len(vectors), sample, replace=False)]
        x = np.asarray(vectors, dtype=np.float64)
        mean = x.mean(axis=0)
        x = x - mean
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        pca = vt[:bits].T  # (dim, bits)
        v = x @ pca
        rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
        for _ in range(iterations):  # alternate: B = sign(VR); R = argmin ||B - VR|| (orthogonal Procrustes)
            b = np.where(v @ rotation >= 0, 1.0, -1.0)
            u, _, wt = np.linalg.svd(v.T @ b)
            rotation = u @ wt
        return cls(kind, bits, mean.astype(np.float32), (pca @ rotation).astype(np.float32))

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if self.kind is CodeKind.ITQ:
            vectors = (vectors - self.mean) @ self.projection
        return pack_bits(vectors > 0)

    def bytes_per_code(self) -> int:
        return words_for(self.bits) * 8

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "bits": self.bits}


def words_for(bits: int) -> int:
    return -(-bits // WORD_BITS)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(n, b) bool -> (n, ceil(b/64)) uint64, zero-padded."""
    n, b = bits.shape
    padded = np.zeros((n, words_for(b) * WORD_BITS), dtype=bool)
    padded[:, :b] = bits
    return np.packbits(padded, axis=1).view(np.uint64)


def hamming_distances(query: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(words,) query code against (n, words) codes -> (n,) number of differing bits."""
    return np.bitwise_count(codes ^ query).sum(axis=1, dtype=np.int32)


def hamming_search(query_code: np.ndarray, codes: np.ndarray, candidates: int) -> np.ndarray:
    """Positions of the `candidates` codes nearest to `query_code` by Hamming distance (unordered)."""
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    distances = hamming_distances(query_code, codes)
    if candidates >= n:
        return np.arange(n)
    return np.argpartition(distances, candidates - 1)[:candidates]
