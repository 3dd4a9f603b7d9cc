"""Helpers shared by the verification tests (kept out of conftest.py so branches merge cleanly)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TINY_CLIP = "twinsight-tiny-verify"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
DEV_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_embedder(tmp_dir: Path):
    """A tiny random-weight open_clip model: fast, deterministic for a given seed."""
    import open_clip
    import torch

    from indexer import load_embedder

    path = Path(tmp_dir) / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    return load_embedder(f"open_clip:{TINY_CLIP}", device="cpu", precision="fp32")


def identity_image(identity: int, sample: int, size: int = 64) -> Image.Image:
    """Synthetic identity: a fixed set of coloured shapes; each sample moves and recolours them slightly on a
    shifted background colour (a nuisance the raw backbone features are sensitive to and a head must learn to ignore)."""
    rng = random.Random(identity * 7919)
    shapes = [(rng.random(), rng.random(), rng.uniform(0.15, 0.35), tuple(rng.randrange(256) for _ in range(3)), rng.random() < 0.5)
              for _ in range(3)]
    base = [rng.randrange(256) for _ in range(3)]
    noise = random.Random(identity * 104729 + sample)
    background = tuple(int(np.clip(c + noise.uniform(-70, 70), 0, 255)) for c in base)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for x, y, r, colour, is_box in shapes:
        x, y = (x + noise.uniform(-0.06, 0.06)) * size, (y + noise.uniform(-0.06, 0.06)) * size
        r *= size
        colour = tuple(int(np.clip(c + noise.uniform(-25, 25), 0, 255)) for c in colour)
        (draw.rectangle if is_box else draw.ellipse)([x - r, y - r, x + r, y + r], fill=colour)
    return image


def write_identity_folder(root: Path, identities: int, samples: int) -> Path:
    """root/group{k % 2}/id{k}/s{j}.png: identities are the nested folder paths."""
    for k in range(identities):
        folder = root / f"group{k % 2}" / f"id{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(samples):
            identity_image(k, j).save(folder / f"s{j}.png")
    return root


def stroke_image(points, size=(300, 120), width=4, paper=235, ink=30, offset=(0, 0), noise=0.0, seed=0) -> Image.Image:
    """Dark pen strokes through `points` on slightly grey paper, optionally with paper noise."""
    array = np.full((size[1], size[0]), paper, dtype=np.float64)
    if noise:
        array += np.random.default_rng(seed).normal(0, noise, array.shape)
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    ImageDraw.Draw(image).line([(x + offset[0], y + offset[1]) for x, y in points], fill=ink, width=width)
    return image.convert("RGB")
