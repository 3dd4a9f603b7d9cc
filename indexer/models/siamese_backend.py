"""`siamese:DIR`: an encoder trained end to end by `python -m indexer.siamese train` (indexer.siamese.encoder)
as the image model of the indexer and the gallery: a folder of signatures or characters indexed and searched
by ink similarity. No text tower and no classifier head (CapabilityError, as for any such model)."""
from __future__ import annotations

import torch
from PIL import Image

from .base import Embedder
from .spec import ModelSpec


class SiameseEncoderEmbedder(Embedder):
    draft_side = 256  # the encoder sees at most 2 x 112 px; JPEGs may be decoded at reduced scale

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype):
        from ..siamese.head import load_head

        encoder = load_head(spec.name)
        if not getattr(encoder, "standalone", False):
            raise ValueError(
                f"{spec.name} is a head on {encoder.backbone} features, not an encoder trained end to end: load the model "
                f"{encoder.backbone} and add the head with --head {spec.name} instead of --model siamese:{spec.name}."
            )
        # float32: the network is a few MB, and bf16 saves nothing measurable on it
        super().__init__(str(spec), device, torch.float32)
        self.encoder = encoder
        self.model = encoder.module.to(device).eval()
        self._finish_init()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        # A page without ink is blank paper here (a gallery may hold one); pairwise mode reports it instead.
        return torch.from_numpy(self.encoder.pixels(image, strict=False))[None]

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)
