"""open_clip models: image and text towers in one space."""
from __future__ import annotations

import logging

import torch

from .base import Embedder
from .spec import ModelSpec

log = logging.getLogger(__name__)


class OpenClipEmbedder(Embedder):
    supports_text = True

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype):
        import open_clip

        super().__init__(str(spec), device, dtype)
        if spec.pretrained is None and not spec.name.startswith(("hf-hub:", "local-dir:")):
            log.warning("open_clip:%s has no pretrained weights named: using RANDOM weights", spec.name)
        model, _, self._transform = open_clip.create_model_and_transforms(
            spec.name, pretrained=spec.pretrained, device=device, weights_only=True
        )
        self.model = model.to(dtype=dtype).eval()
        self.tokenizer = open_clip.get_tokenizer(spec.name)
        self.logit_scale = float(model.logit_scale.detach().exp().clamp(max=100)) if hasattr(model, "logit_scale") else 100.0
        self._finish_init()

    def preprocess(self, image):
        return self._transform(image)

    def _image_features(self, pixels):
        return self.model.encode_image(pixels)

    def _text_features(self, texts):
        return self.model.encode_text(self.tokenizer(texts).to(self.device))
