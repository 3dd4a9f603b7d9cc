"""Fixtures for the index tests: a tiny random open_clip model (with a text tower) and small galleries."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from anywhere without installing the package
    sys.path.insert(0, str(ROOT))
CONFIGS = Path(__file__).parent / "configs"
TINY_CLIP_SPEC = "open_clip:tiny-test"


@pytest.fixture(scope="session")
def tiny_clip():
    """A 32-d open_clip model with random weights (32x32 input, 1 layer per tower): loads in under a second."""
    import open_clip
    import torch

    from indexer import load_embedder

    open_clip.add_model_config(CONFIGS / "tiny-test.json")
    torch.manual_seed(0)
    return load_embedder(TINY_CLIP_SPEC)


def make_gallery_images(n: int, seed: int = 0, size: int = 40) -> list[Image.Image]:
    """n distinct random RGB images (colour blocks, so the tiny model sees different inputs)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        base = rng.integers(0, 256, 3)
        array = np.clip(base + rng.normal(0, 60, (size, size, 3)), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(array))
    return images


@pytest.fixture()
def gallery_dataset():
    """A datasets.Dataset with an Image feature and a ClassLabel, 24 rows, 3 classes."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["red", "green", "blue"]),
                                  "caption": datasets.Value("string")})
    images = make_gallery_images(24, seed=1)
    return datasets.Dataset.from_dict(
        {"image": images, "label": [i % 3 for i in range(24)], "caption": [f"item {i}" for i in range(24)]},
        features=features,
    )


@pytest.fixture()
def gallery_folder(tmp_path):
    """An Omniglot-like folder: ALPHABET/characterNN/*.png, 12 images in 4 label folders."""
    root = tmp_path / "folder"
    for i, image in enumerate(make_gallery_images(12, seed=2)):
        folder = root / f"Alphabet_{i % 2}" / f"character{i % 4:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:03d}.png")
    return root
