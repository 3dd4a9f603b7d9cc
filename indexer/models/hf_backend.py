"""transformers models: CLIP/SigLIP (image + text), any vision backbone, image classifiers."""
from __future__ import annotations

import math

import torch
from PIL import Image

from .base import Embedder
from .transforms import PixelsToTensor, ResizeCenterCrop
from .spec import ModelSpec

# Image processors whose whole recipe is resize (+ centre crop) + rescale by 1/255 + normalise, which PIL and numpy
# reproduce on the calling thread (their torchvision backend runs torch ops, an OpenMP team beside the model's).
_PLAIN_PROCESSORS = {"CLIPImageProcessor", "ViTImageProcessor", "SiglipImageProcessor", "Siglip2ImageProcessor"}


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
        self._transform = pil_transform(self._image_processor)
        self._finish_init()

    @property
    def labels(self) -> list[str]:
        if not self.supports_classify:
            return super().labels
        return self._labels

    def preprocess(self, image):
        if self._transform is not None:
            return self._transform(image)
        return self._image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def _image_features(self, pixels):
        if self._dual:
            return _pooled(self.model.get_image_features(pixel_values=pixels))
        backbone = self.model.base_model if self.supports_classify else self.model
        return _pooled(backbone(pixel_values=pixels))

    def _image_tower(self):
        return self.model, ("vision_model", "visual_projection") if self._dual else None

    def _text_input(self, texts):
        # SigLIP was trained on max_length padding; CLIP accepts either. A fixed length also lets one traced graph
        # serve every text.
        tokens = self._tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
        self._text_keys = tuple(tokens)  # the same tokenizer gives the same keys every time
        return tuple(tokens[key].to(self.device) for key in self._text_keys)

    def _text_forward(self, *tokens):
        return _pooled(self.model.get_text_features(**dict(zip(self._text_keys, tokens))))

    def _logits(self, pixels):
        return self.model(pixel_values=pixels).logits


def pil_transform(processor):
    """The processor's recipe as PIL + numpy steps, or None when it does anything else (then the processor runs)."""
    from torchvision import transforms

    if type(processor).__name__ not in _PLAIN_PROCESSORS or not getattr(processor, "do_resize", False):
        return None
    if getattr(processor, "do_pad", None) or not getattr(processor, "do_rescale", False):
        return None
    if not math.isclose(getattr(processor, "rescale_factor", 0.0), 1 / 255):
        return None
    size, crop = processor.size, getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    resample = Image.Resampling(int(getattr(processor, "resample", Image.BICUBIC)))
    if getattr(size, "shortest_edge", None) and not (size.height or size.width or size.longest_edge) and crop:
        resize = ResizeCenterCrop(size.shortest_edge, (crop.height, crop.width), resample, round_offsets=False)
    elif size.height and size.width and not size.shortest_edge and not crop:
        resize = transforms.Lambda(lambda image: image.resize((size.width, size.height), resample))
    else:
        return None
    normalized = getattr(processor, "do_normalize", False)
    mean, std = (processor.image_mean, processor.image_std) if normalized else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return transforms.Compose([resize, PixelsToTensor(mean, std)])
