"""Tiny random-weight models built from configs, so backend tests run offline in seconds."""
from __future__ import annotations

import json
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
TINY_OPEN_CLIP = "tiny-test"
TINY_CLIP_SPEC = f"open_clip:{TINY_OPEN_CLIP}"
WORDS = ["a", "photo", "of", "cat", "dog", "car", "."]


def register_tiny_open_clip() -> str:
    """Register tests/configs/tiny-test.json with open_clip; returns the model spec."""
    import open_clip

    if TINY_OPEN_CLIP not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR / f"{TINY_OPEN_CLIP}.json")
    return f"open_clip:{TINY_OPEN_CLIP}"


def _tiny_clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(set("".join(WORDS))):
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    for word in WORDS:
        vocab.setdefault(word + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16), len(vocab)


def save_tiny_hf_clip(folder: Path) -> Path:
    """A 1-layer CLIP (24-d projection) with its tokenizer and image processor, saved like a hub repo."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer, vocab_size = _tiny_clip_tokenizer(folder)
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_tiny_vit(folder: Path, labels: list[str] | None = None) -> Path:
    """A 1-layer ViT; with `labels`, an image classifier whose id2label are those labels."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, ViTModel

    folder.mkdir(parents=True, exist_ok=True)
    config = ViTConfig(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    if labels:
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        model = ViTForImageClassification(config)
    else:
        model = ViTModel(config)
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def make_gallery_images(n: int, seed: int = 0, size: int = 40):
    """n distinct random RGB images (colour blocks, so the tiny model sees different inputs)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        base = rng.integers(0, 256, 3)
        array = np.clip(base + rng.normal(0, 60, (size, size, 3)), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(array))
    return images
