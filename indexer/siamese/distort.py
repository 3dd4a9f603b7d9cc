"""Batched stroke augmentation on tensors (ink = 1, paper = 0): Koch et al.'s random affine distortions and
thicker or thinner strokes, plus the four 90-degree rotations. One affine_grid/grid_sample call and two
pooling passes per batch: per-image PIL transforms cost more than the network's own step."""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def random_affine(x: torch.Tensor, generator: torch.Generator, rotate: float = 10.0, shear: float = 0.3,
                  scale: tuple[float, float] = (0.8, 1.2), shift: float = 0.05, same_for_all: bool = False) -> torch.Tensor:
    """Each image of (n, 1, H, W) rotated by up to `rotate` degrees, sheared by up to `shear`, scaled by
    `scale` per axis and shifted by up to `shift` of its size (Koch et al.'s ranges), about its centre.
    same_for_all: one draw for the whole batch (test-time views)."""
    n = len(x)

    def uniform(low: float, high: float) -> torch.Tensor:
        draw = torch.rand(1 if same_for_all else n, generator=generator)
        return (low + (high - low) * draw).expand(n)

    angle = uniform(-rotate, rotate) * math.pi / 180
    shear_x, shear_y = uniform(-shear, shear), uniform(-shear, shear)
    sx, sy = uniform(*scale), uniform(*scale)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shearing = torch.stack([torch.stack([torch.ones(n), shear_x], -1), torch.stack([shear_y, torch.ones(n)], -1)], -2)
    forward = rotation @ shearing @ torch.diag_embed(torch.stack([sx, sy], -1))
    # affine_grid maps output coordinates to input ones: the inverse of the forward transform.
    inverse = torch.linalg.inv(forward)
    offset = torch.stack([uniform(-shift, shift), uniform(-shift, shift)], -1) * 2  # grid coordinates span 2
    theta = torch.cat([inverse, -(inverse @ offset[:, :, None])], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_thickness(x: torch.Tensor, generator: torch.Generator, p_thick: float = 0.25, p_thin: float = 0.25) -> torch.Tensor:
    """A quarter of the images get strokes a pixel thicker (3x3 max-pool of the ink), a quarter thinner
    (3x3 min-pool), the rest stay as they are."""
    draw = torch.rand(len(x), generator=generator)[:, None, None, None]
    thick = F.max_pool2d(x, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return torch.where(draw < p_thick, thick, torch.where(draw < p_thick + p_thin, thin, x))


def rotate_quarters(x: torch.Tensor, quarters: torch.Tensor) -> torch.Tensor:
    """Image i turned by quarters[i] x 90 degrees (square images)."""
    out = x.clone()
    for k in (1, 2, 3):
        chosen = quarters == k
        if chosen.any():
            out[chosen] = torch.rot90(x[chosen], k, dims=(2, 3))
    return out


def distort(x: torch.Tensor, generator: torch.Generator, thickness: bool = True) -> torch.Tensor:
    x = random_affine(x, generator)
    return random_thickness(x, generator) if thickness else x
