"""Fast PIL preprocessing steps that give torchvision's results: fused resize + centre crop, and ToTensor +
Normalize in numpy (off torch's thread pool)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image


class PixelsToTensor:
    """ToTensor + Normalize computed in numpy. Preprocessing runs in many threads (decode workers, app requests)
    beside the model's forward; torch would run these ops on its OpenMP pool, whose extra teams preempt the
    model's threads (a preempted thread stalls a whole parallel op). numpy uses the calling thread only."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        std = np.asarray(std, dtype=np.float32)
        self.scale = (1.0 / (255.0 * std))[:, None, None]  # (x / 255 - mean) / std, folded
        self.offset = (np.asarray(mean, dtype=np.float32) / std)[:, None, None]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = np.asarray(image)
        # Channels first while still 8-bit (a quarter of the bytes to move), then one multiply into float32.
        planes = pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))
        out = np.multiply(planes, self.scale, dtype=np.float32)
        out -= self.offset
        return torch.from_numpy(out)


class ResizeCenterCrop:
    """torchvision's Resize(short side) followed by CenterCrop, on a PIL image, as one PIL resize of only the
    region the crop keeps: the same pixels (within one level of rounding) at about half the cost, because the
    filter never computes the rows and columns the crop would throw away."""

    def __init__(self, size: int, crop: tuple[int, int], resample: int = Image.BICUBIC, round_offsets: bool = True):
        if crop[0] > size or crop[1] > size:
            raise ValueError(f"crop {crop} is larger than the resized short side {size}")
        self.size, self.crop, self.resample = size, crop, resample
        self.round_offsets = round_offsets  # torchvision rounds the crop's offsets; transformers truncates them

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        # torchvision's output size: the short side becomes `size`, the long side is truncated, not rounded.
        new_long = long if short == self.size else int(self.size * long / short)
        new_width, new_height = (self.size, new_long) if width <= height else (new_long, self.size)
        crop_height, crop_width = self.crop
        margin_y, margin_x = new_height - crop_height, new_width - crop_width
        if self.round_offsets:
            top, left = int(round(margin_y / 2.0)), int(round(margin_x / 2.0))
        else:
            top, left = margin_y // 2, margin_x // 2
        if (new_width, new_height) == (width, height):
            return image.crop((left, top, left + crop_width, top + crop_height))
        x_scale, y_scale = width / new_width, height / new_height
        box = (left * x_scale, top * y_scale, (left + crop_width) * x_scale, (top + crop_height) * y_scale)
        return image.resize((crop_width, crop_height), self.resample, box=box)


def fast_pil_transform(transform):
    """The same torchvision Compose, with Resize + CenterCrop done by ResizeCenterCrop and the ToTensor +
    Normalize tail by PixelsToTensor. Steps it does not recognise exactly are kept as they are."""
    from torchvision import transforms

    steps = list(getattr(transform, "transforms", []))
    if len(steps) >= 2 and type(steps[-2]).__name__ in ("ToTensor", "MaybeToTensor") and isinstance(steps[-1], transforms.Normalize):
        steps[-2:] = [PixelsToTensor(steps[-1].mean, steps[-1].std)]
    for i in range(len(steps) - 1):
        fused = _fused_resize_crop(steps[i], steps[i + 1])
        if fused is not None:
            steps[i : i + 2] = [fused]
            break
    return transforms.Compose(steps) if steps else transform


def _fused_resize_crop(resize, crop) -> ResizeCenterCrop | None:
    from torchvision import transforms

    if not (isinstance(resize, transforms.Resize) and isinstance(crop, transforms.CenterCrop)):
        return None
    size = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
    resample = _PIL_RESAMPLE.get(resize.interpolation.value)
    crop_size = tuple(crop.size) if len(crop.size) == 2 else (crop.size[0], crop.size[0])
    if size is None or resize.max_size is not None or resample is None or max(crop_size) > size:
        return None
    return ResizeCenterCrop(size, crop_size, resample)


_PIL_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}
