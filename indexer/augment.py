"""Augmentations and self-generated labelled sets for verification.

Strokes (signatures, handwriting): small rotation, shear and scale, shifts and stroke-width changes, as in
Koch et al.'s Omniglot Siamese network. Photos (scenes, faces): crops, flips, colour and slight rotation.
The generated sets give the project data it can calibrate default thresholds on without any download.
"""
from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

Augment = Callable[[Image.Image, random.Random], Image.Image]


def _affine(image: Image.Image, rng: random.Random, rotate: float, shear: float, scale: tuple, shift: float, fill):
    """Random rotation (degrees), shear (radians), scale and shift (fraction of size) about the centre."""
    width, height = image.size
    angle = math.radians(rng.uniform(-rotate, rotate))
    shear_x, shear_y = rng.uniform(-shear, shear), rng.uniform(-shear, shear)
    sx, sy = rng.uniform(*scale), rng.uniform(*scale)
    tx, ty = rng.uniform(-shift, shift) * width, rng.uniform(-shift, shift) * height
    cos, sin = math.cos(angle), math.sin(angle)
    # forward matrix = rotation @ shear @ scale; PIL wants the inverse (output -> input)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1, shear_x], [shear_y, 1]]) @ np.diag([sx, sy])
    inverse = np.linalg.inv(forward)
    cx, cy = width / 2, height / 2
    offset = np.array([cx, cy]) - inverse @ np.array([cx + tx, cy + ty])
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return image.transform(image.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=fill)


def augment_strokes(image: Image.Image, rng: random.Random) -> Image.Image:
    """Dark strokes on white: Koch et al.'s affine ranges plus thicker or thinner strokes."""
    image = _affine(image, rng, rotate=10, shear=0.3, scale=(0.8, 1.2), shift=0.05, fill=(255, 255, 255))
    width = rng.random()
    if width < 0.25:
        image = image.filter(ImageFilter.MinFilter(3))  # thicker dark ink
    elif width < 0.5:
        image = image.filter(ImageFilter.MaxFilter(3))  # thinner
    return image


def augment_photo(image: Image.Image, rng: random.Random) -> Image.Image:
    """Photos and faces: a crop of 70-100% of the area, mirror, light/colour changes, slight rotation."""
    width, height = image.size
    area = rng.uniform(0.7, 1.0)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w = min(width, round(math.sqrt(area * width * height * aspect)))
    h = min(height, round(math.sqrt(area * width * height / aspect)))
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    image = image.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.7, 1.3))
    return image.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR, expand=False)


def augment_for(mode: str) -> Augment:
    return augment_strokes if str(getattr(mode, "value", mode)) == "signature" else augment_photo


# -- self-generated labelled sets --------------------------------------------------------------------------
PHOTO_NAMES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
               "colorwheel", "coins", "moon", "brick", "grass", "gravel", "page", "text")


def photo_views(n_photos: int = 10, views: int = 3, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """(augmented view, photo name): scikit-image's bundled photos, each seen `views` times."""
    from skimage import data

    from .images import load_image

    rng = random.Random(seed)
    labelled = []
    for name in PHOTO_NAMES[:n_photos]:
        photo = load_image(getattr(data, name)())
        labelled += [(augment_photo(photo, rng), name) for _ in range(views)]
    return labelled


def random_crops(images: list[np.ndarray], per_image: int, seed: int = 0) -> list[np.ndarray]:
    """`per_image` random crops (each side 1/3 to all of the image) of every HxW[xC] array: a gallery whose
    neighbours are close calls, for checking that a fast path keeps fp32's neighbours."""
    rng = np.random.default_rng(seed)
    crops = []
    for image in images:
        h, w = image.shape[:2]
        for _ in range(per_image):
            ch, cw = rng.integers(h // 3, h), rng.integers(w // 3, w)
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crops.append(image[y : y + ch, x : x + cw])
    return crops


def draw_scribble(points: np.ndarray, size: tuple[int, int] = (320, 128), width: int = 3) -> Image.Image:
    """Dark ink on white paper along `points` (k, 2) in [0, 1]^2, as a smooth pen path."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    # Catmull-Rom-like smoothing by linear upsampling then a moving average.
    dense = np.concatenate([np.linspace(a, b, 12, endpoint=False) for a, b in zip(points[:-1], points[1:])] + [points[-1:]])
    kernel = np.ones(5) / 5
    smooth = np.stack([np.convolve(dense[:, i], kernel, mode="valid") for i in range(2)], axis=1)
    xy = [(float(x * (size[0] - 20) + 10), float(y * (size[1] - 20) + 10)) for x, y in smooth]
    draw.line(xy, fill=(20, 20, 40), width=width, joint="curve")
    return image


def scribble_writers(n_writers: int = 10, samples: int = 3, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """(signature-like drawing, writer id): each writer has a fixed pen path, each sample a jittered copy."""
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    labelled = []
    for writer in range(n_writers):
        k = int(rng.integers(14, 22))
        # Mostly left to right with back-steps (loops), up and down like cursive writing.
        x = np.clip(np.linspace(0, 1, k) + rng.uniform(-0.1, 0.1, k), 0, 1)
        base = np.stack([x, rng.uniform(0, 1, k)], axis=1)
        for _ in range(samples):
            points = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
            drawing = draw_scribble(points, width=int(rng.integers(3, 6)))
            labelled.append((augment_strokes(drawing, prng), f"writer{writer:02d}"))
    return labelled


def all_pairs(identities: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (i, j) of every unordered pair i < j and whether the two share an identity."""
    i, j = np.triu_indices(len(identities), k=1)
    ids = np.asarray(identities, dtype=object)
    return i, j, (ids[i] == ids[j]).astype(np.int8)
