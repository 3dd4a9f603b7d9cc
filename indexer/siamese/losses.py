"""Siamese losses on a batch of L2-normalised embeddings `z` (n, d) with identity labels `y` (n,).

Every pair (or triplet) in the batch is used. Distances are Euclidean between unit vectors (0..2),
which orders pairs exactly like the cosine distance used at inference.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LOSSES = ("contrastive", "triplet", "bce", "koch", "proto")
DEFAULT_MARGINS = {"contrastive": 1.0, "triplet": 0.2, "bce": None, "koch": None, "proto": None}


def _pair_masks(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = y[:, None] == y[None, :]
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    return same & upper, ~same & upper


def _distances(z: torch.Tensor) -> torch.Tensor:
    return (2.0 - 2.0 * (z @ z.T)).clamp_min(1e-12).sqrt()


class SiameseLoss(nn.Module):
    """contrastive (Hadsell et al. 2006), triplet (batch-all, Schroff et al. 2015), bce (a learned scale and
    bias on the cosine), koch (Koch et al. 2015: logistic regression on the learned weighted L1 distance of
    the two embeddings) or proto (prototypical, Snell et al. 2017: in each class the first image of the
    batch is the support, the others are queries classified by scaled cosine to every class's support).
    `dim`: the embedding size (koch's per-component weights)."""

    def __init__(self, kind: str = "contrastive", margin: float | None = None, dim: int | None = None):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"Unknown loss {kind!r}; choose one of {', '.join(LOSSES)}.")
        self.kind = kind
        self.margin = DEFAULT_MARGINS[kind] if margin is None else float(margin)
        if kind == "bce":
            # p(same) = sigmoid(scale * cosine + bias); both learned with the head.
            self.scale = nn.Parameter(torch.tensor(10.0))
            self.bias = nn.Parameter(torch.tensor(-5.0))
        if kind == "koch":
            if not dim:
                raise ValueError("The koch loss learns one weight per embedding component: give the loss `dim`.")
            self.weights = nn.Parameter(torch.full((dim,), -4.0 / dim**0.5))  # larger |difference|: less alike
            self.bias = nn.Parameter(torch.tensor(2.0))
        if kind == "proto":
            self.scale = nn.Parameter(torch.tensor(10.0))  # softmax temperature on cosine similarities

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "proto":
            return self._prototypical(z, y)
        pos, neg = _pair_masks(y)
        if not pos.any() or not neg.any():
            raise ValueError("A training batch needs at least two identities with two images each.")
        if self.kind == "contrastive":
            d = _distances(z)
            return 0.5 * (d[pos].pow(2).mean() + F.relu(self.margin - d[neg]).pow(2).mean())
        if self.kind == "triplet":
            d = _distances(z)
            same = y[:, None] == y[None, :]
            eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
            valid = (same & ~eye)[:, :, None] & (~same)[:, None, :]  # [anchor, positive, negative]
            losses = F.relu(d[:, :, None] - d[:, None, :] + self.margin)
            return losses[valid].mean()
        if self.kind == "koch":
            logits = (z[:, None, :] - z[None, :, :]).abs() @ self.weights + self.bias
        else:
            logits = self.scale * (z @ z.T) + self.bias
        targets = pos.float()
        # Balanced: same and different pairs weigh the same however many of each the batch holds.
        return 0.5 * (
            F.binary_cross_entropy_with_logits(logits[pos], targets[pos])
            + F.binary_cross_entropy_with_logits(logits[neg], targets[neg])
        )

    def _prototypical(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        classes, target = torch.unique(y, return_inverse=True)
        position = torch.arange(len(y), device=y.device)
        first = torch.full((len(classes),), len(y), device=y.device).scatter_reduce(0, target, position, "amin")
        query = torch.ones(len(y), dtype=torch.bool, device=y.device)
        query[first] = False
        if len(classes) < 2 or not query.any():
            raise ValueError("A prototypical batch needs two or more classes and a second image of at least one.")
        logits = self.scale * (z[query] @ z[first].T)
        return F.cross_entropy(logits, target[query])
