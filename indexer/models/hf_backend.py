"""transformers models: CLIP/SigLIP (image + text), any vision backbone, image classifiers."""
from __future__ import annotations

import torch

from .base import Embedder
from .spec import ModelSpec


def _pooled(output) -> torch.Tensor:
    """The image-level feature of a model output: projected/pooled output, else the CLS token."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        pooled = getattr(output, "image_embeds", None)
    if pooled is None:
        pooled = output.last_hidden_state[:, 0]
    return pooled.flatten(1)  # CNN poolers give (B, C, 1, 1)


class HFEmbedder(Embedder):
    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False):
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoProcessor

        super().__init__(str(spec), device, dtype)
        source = spec.name
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        architectures = config.architectures or []
        self._dual = hasattr(config, "text_config") and hasattr(config, "vision_config")
        if self._dual:  # CLIP, SigLIP and friends
            self.model = AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code)
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
            self._image_processor, self._tokenizer = processor.image_processor, processor.tokenizer
            self.supports_text = True
            if hasattr(self.model, "logit_scale"):
                self.logit_scale = float(self.model.logit_scale.detach().exp().clamp(max=100))
        else:
            self.supports_classify = any(a.endswith("ForImageClassification") for a in architectures) and bool(
                getattr(config, "id2label", None)
            )
            cls = AutoModelForImageClassification if self.supports_classify else AutoModel
            self.model = cls.from_pretrained(source, trust_remote_code=trust_remote_code)
            self._image_processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
            if self.supports_classify:
                self._labels = [config.id2label[i] for i in range(len(config.id2label))]
        size = getattr(getattr(config, "vision_config", config), "image_size", None)
        if isinstance(size, int):
            self.draft_side = max(self.draft_side, size)
        self.model = self.model.to(device=device, dtype=dtype).eval()
        self._finish_init()

    @property
    def labels(self) -> list[str]:
        if not self.supports_classify:
            return super().labels
        return self._labels

    def preprocess(self, image):
        return self._image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def _image_features(self, pixels):
        if self._dual:
            return _pooled(self.model.get_image_features(pixel_values=pixels))
        backbone = self.model.base_model if self.supports_classify else self.model
        return _pooled(backbone(pixel_values=pixels))

    def _text_features(self, texts):
        # SigLIP was trained on max_length padding; CLIP accepts either.
        tokens = self._tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt").to(self.device)
        return _pooled(self.model.get_text_features(**tokens))

    def _logits(self, pixels):
        return self.model(pixel_values=pixels).logits
