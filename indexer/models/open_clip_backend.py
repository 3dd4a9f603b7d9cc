"""open_clip models: image and text towers in one space.

ViT image towers can hand their last residual blocks to a Siamese head for fine-tuning: the trunk is the
patch embedding + the first blocks (`visual._embeds`, `visual.transformer.resblocks[:-N]`), the top is
the last N blocks + open_clip's own pooling, `ln_post` and `proj`.
"""
from __future__ import annotations

import copy
import logging

import torch

from .base import Embedder
from .transforms import fast_pil_transform
from .spec import ModelSpec

log = logging.getLogger(__name__)


class OpenClipEmbedder(Embedder):
    supports_text = True

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype):
        import open_clip

        super().__init__(str(spec), device, dtype)
        if spec.pretrained is None and not spec.name.startswith(("hf-hub:", "local-dir:")):
            log.warning("open_clip:%s has no pretrained weights named: using RANDOM weights", spec.name)
        model, _, transform = open_clip.create_model_and_transforms(
            spec.name, pretrained=spec.pretrained, device=device, weights_only=True
        )
        self._transform = fast_pil_transform(transform)
        self.model = model.to(dtype=dtype).eval()
        size = getattr(model.visual, "image_size", None)
        if size:
            self.draft_side = max(self.draft_side, *(size if isinstance(size, (tuple, list)) else (size,)))
        self.tokenizer = open_clip.get_tokenizer(spec.name)
        self.logit_scale = float(model.logit_scale.detach().exp().clamp(max=100)) if hasattr(model, "logit_scale") else 100.0
        self.fine_tune_max_blocks = _vit_blocks(self.model.visual)
        self._finish_init()

    def preprocess(self, image):
        return self._transform(image)

    def _image_features(self, pixels):
        return self.model.encode_image(pixels)

    def _image_tower(self):
        return self.model, ("visual",)

    def _text_input(self, texts):
        return (self.tokenizer(texts).to(self.device),)

    def _text_forward(self, tokens):
        return self.model.encode_text(tokens)

    def _trunk_forward(self, pixels, cut_blocks):
        visual = self.model.visual
        x = visual._embeds(pixels)
        blocks = visual.transformer.resblocks
        return _run_blocks(list(blocks)[: len(blocks) - cut_blocks], x, visual.transformer.batch_first)

    def _top_copy(self, cut_blocks):
        return copy.deepcopy(OpenClipTop(self.model.visual, cut_blocks)).float().requires_grad_(True)


def _vit_blocks(visual) -> int:
    """How many residual blocks an open_clip ViT tower has (0: not a ViT tower this code understands)."""
    transformer = getattr(visual, "transformer", None)
    if not hasattr(visual, "_embeds") or not hasattr(visual, "_pool") or not hasattr(transformer, "resblocks"):
        return 0
    return len(transformer.resblocks)


def _run_blocks(blocks, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """Batch-first tokens through `blocks` (transposed around them when the tower runs sequence-first)."""
    if not batch_first:
        x = x.transpose(0, 1)
    for block in blocks:
        x = block(x)
    return x if batch_first else x.transpose(0, 1)


class OpenClipTop(torch.nn.Module):
    """The last N residual blocks of an open_clip ViT image tower, then its pooling, `ln_post` and `proj`
    (open_clip's own `_pool`, so every pooling variant behaves as in the tower)."""

    def __init__(self, visual, cut_blocks: int):
        super().__init__()
        blocks = visual.transformer.resblocks
        self.resblocks = torch.nn.ModuleList(list(blocks)[len(blocks) - cut_blocks :])
        self.batch_first = visual.transformer.batch_first
        for name in ("attn_pool", "attn_pool_contrastive", "ln_post", "proj"):
            setattr(self, name, getattr(visual, name, None))
        for name in ("attn_pool_type", "pool_type", "final_ln_after_pool"):
            setattr(self, name, getattr(visual, name, None))
        self._tower = type(visual)

    def _global_pool(self, x):
        return self._tower._global_pool(self, x)

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        pooled, _ = self._tower._pool(self, _run_blocks(self.resblocks, trunk, self.batch_first))
        return pooled @ self.proj if self.proj is not None else pooled


def top_architecture(spec: str, cut_blocks: int) -> OpenClipTop:
    """An OpenClipTop of `spec`'s layout with untrained weights, to load a saved head's blocks into."""
    import open_clip

    name = ModelSpec.parse(spec).name
    return OpenClipTop(open_clip.create_model(name, pretrained=None).visual, cut_blocks)
