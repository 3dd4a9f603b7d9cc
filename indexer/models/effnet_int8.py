"""EfficientNet-Lite0 with int8 convolutions (TWINSIGHT_PRECISION=int8): static quantization on oneDNN's kernels.

Batch norms are folded into the convolutions; weights are int8 per output channel (symmetric); activations stay
uint8 from one convolution to the next (per tensor). Lite0 was designed for this: ReLU6 everywhere and no
squeeze-excite, so a ReLU6 output quantized on [0, 6] (zero point 0) is exact at the clamp, and conv2d_relu with
that output scale *is* conv + ReLU6: those scales need no data. Only the linear bottlenecks (the projections
without an activation, and the residual sums) take their ranges from calibration images, which are generated
from the photos that ship inside scikit-image (never from user or dev data).

The stem and the first two stages (3 blocks, at 112x112 and 56x56) stay in the model's float dtype: with int8
weights, the stem or the first block alone takes the features' cosine to fp32 down to 0.97 (their folded weights
are large next to the [0, 6] window); with the second stage in int8 too, 2.2-2.5x bf16's speed, but a min cosine of 0.987 on
200 photo crops and -0.6 points of 1-NN accuracy on the crowded Omniglot gallery, outside issue #22's targets.
Why this route and not torch.ao's FX or PT2E ones: docs/dev/MEASUREMENT-NOTES.md, int8.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from PIL import Image

from ..augment import random_crops
from ..errors import CapabilityError
from .quantize import _quantized_engine

RELU6_SCALE = 6 / 255


def _fold(conv: torch.nn.Conv2d, bn: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The convolution's weight and bias with the (eval-mode) batch norm after it folded in, in float32."""
    scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
    weight = conv.weight.detach().float() * scale[:, None, None, None]
    return weight, (bn.bias.float() - bn.running_mean.float() * scale).detach()


class Int8Conv(torch.nn.Module):
    """Convolution + folded batch norm (+ ReLU6) on uint8 activations; output uint8 on its own scale."""

    def __init__(self, conv: torch.nn.Conv2d, bn: torch.nn.Module, output_range: tuple[float, float] | None):
        super().__init__()
        self.relu6 = isinstance(bn.act, torch.nn.ReLU6)
        if not self.relu6 and not isinstance(bn.act, torch.nn.Identity):
            raise ValueError(f"int8 convolutions cover ReLU6 or no activation, not {type(bn.act).__name__}")
        weight, bias = _fold(conv, bn)
        padding = conv.padding
        if type(conv).__name__ == "Conv2dSame":  # TensorFlow "same" padding (timm pads each input with F.pad)
            weight, padding = _same_as_symmetric(weight, conv)
        scales = (weight.abs().amax((1, 2, 3)).clamp(min=1e-12) / 127).double()
        with warnings.catch_warnings(), _quantized_engine("onednn"):
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices; the kernels themselves stay
            qweight = torch.quantize_per_channel(weight, scales, torch.zeros(len(weight), dtype=torch.long), 0, torch.qint8)
            self._packed = torch.ops.quantized.conv2d_prepack(qweight, bias, list(conv.stride), list(padding),
                                                              list(conv.dilation), conv.groups)
        # A ReLU6 output on [0, 6]: saturating at 255 is the clamp at 6. Otherwise the calibrated range.
        self.scale, self.zero_point = (RELU6_SCALE, 0) if self.relu6 else _qparams(*output_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = torch.ops.quantized.conv2d_relu if self.relu6 else torch.ops.quantized.conv2d
        return op.new(x, self._packed, self.scale, self.zero_point)


def _same_as_symmetric(weight: torch.Tensor, conv: torch.nn.Conv2d) -> tuple[torch.Tensor, tuple[int, int]]:
    """A stride-2 "same" convolution of an odd kernel k on an even-sized input pads k // 2 - 1 before and k // 2
    after: the same as padding k // 2 on both sides with a kernel of k + 1, its first row and column zero. Padding
    a quantized tensor with F.pad instead cost 6x the convolution itself (fill, copy, mul)."""
    if conv.stride != (2, 2) or conv.dilation != (1, 1) or any(k % 2 == 0 for k in conv.kernel_size):
        raise ValueError(f"int8 'same' convolutions cover odd kernels at stride 2, not {conv}")
    return F.pad(weight, (1, 0, 1, 0)), tuple(k // 2 for k in conv.kernel_size)


def _qparams(low: float, high: float) -> tuple[float, int]:
    """uint8 scale and zero point covering [low, high] (and 0)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-6) / 255
    return scale, int(round(-low / scale))


class Int8Block(torch.nn.Module):
    """One of timm's InvertedResidual / DepthwiseSeparableConv blocks (no squeeze-excite) with int8 convolutions."""

    def __init__(self, block: torch.nn.Module, ranges: dict[str, tuple[float, float]], name: str):
        super().__init__()
        pairs = [("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")] if hasattr(block, "conv_pwl") else \
            [("conv_dw", "bn1"), ("conv_pw", "bn2")]
        if not isinstance(block.se, torch.nn.Identity) or not isinstance(block.aa, torch.nn.Identity):
            raise ValueError("int8 blocks cover blocks without squeeze-excite or anti-aliasing (EfficientNet-Lite)")
        self.convs = torch.nn.Sequential(*(Int8Conv(getattr(block, c), getattr(block, b), ranges.get(f"{name}.{b}"))
                                           for c, b in pairs))
        self.skip = bool(block.has_skip)
        self.scale, self.zero_point = _qparams(*ranges[name]) if self.skip else (1.0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        return torch.ops.quantized.add(y, x, self.scale, self.zero_point) if self.skip else y


def calibration_ranges(model: torch.nn.Module, pixels: torch.Tensor) -> dict[str, tuple[float, float]]:
    """(min, max) over `pixels` of what int8 cannot take from ReLU6: every block's output and the outputs of the
    batch norms without an activation, by name, with the model in its own dtype and layout (fp32 NCHW: ~40 s here)."""
    ranges: dict[str, tuple[float, float]] = {}

    def record(name):
        def hook(module, inputs, output):
            # A channels_last tensor read in its memory order: a plain aminmax copied it first (3x the forward).
            now = torch.aminmax(output.permute(0, 2, 3, 1) if output.is_contiguous(memory_format=torch.channels_last) else output)
            low, high = ranges.get(name, (math.inf, -math.inf))
            ranges[name] = min(low, now.min.item()), max(high, now.max.item())
        return hook

    watched = [(n, m) for n, m in model.named_modules() if n.startswith("blocks.") and
               (n.count(".") == 2 or n.count(".") == 3 and isinstance(getattr(m, "act", None), torch.nn.Identity))]
    hooks = [m.register_forward_hook(record(n)) for n, m in watched]
    dtype = next(model.parameters()).dtype
    try:
        with torch.no_grad():
            for batch in pixels.split(16):
                model(batch.to(dtype).contiguous(memory_format=torch.channels_last))
    finally:
        for h in hooks:
            h.remove()
    return ranges


class Int8Features(torch.nn.Module):
    """EfficientNet-Lite0's pooled features: the stem and the first `float_stages` stages in the model's float dtype
    (sharing its weights), the other stages and the head convolution in int8; returns the input's dtype."""

    def __init__(self, model: torch.nn.Module, pixels: torch.Tensor, float_stages: int = 2):
        super().__init__()
        ranges = calibration_ranges(model, pixels)
        self.stem = torch.nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:float_stages])
        last = f"blocks.{float_stages - 1}.{len(model.blocks[float_stages - 1]) - 1}"
        self.input_scale, self.input_zero_point = _qparams(*ranges[last])
        self.blocks = torch.nn.Sequential(*(Int8Block(block, ranges, f"blocks.{i}.{j}")
                                            for i, stage in enumerate(model.blocks) if i >= float_stages
                                            for j, block in enumerate(stage)))
        self.head = Int8Conv(model.conv_head, model.bn2, None)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-1] % 32 or pixels.shape[-2] % 32:  # then every stride-2 convolution sees an even size
            raise CapabilityError(f"int8 EfficientNet-Lite0 takes sides that are multiples of 32, not {tuple(pixels.shape[-2:])}; "
                                  "set TWINSIGHT_PRECISION=auto.")
        x = torch.quantize_per_tensor(self.stem(pixels).float(), self.input_scale, self.input_zero_point, torch.quint8)
        return self.head(self.blocks(x)).dequantize().mean((2, 3)).to(pixels.dtype)


# Photos that ship inside scikit-image, none of them in the benchmarks' agreement galleries (docs/BENCHMARKS.md, 1).
CALIBRATION_PHOTOS = ("stereo_motorcycle", "coins", "moon", "clock", "page", "text", "brick", "grass", "gravel",
                      "colorwheel", "logo")


def calibration_images(per_photo: int = 3) -> list[Image.Image]:
    """`per_photo` random crops of each calibration photo, as RGB images (33: about 1 s of bf16 forwards). Min-max
    ranges follow the crops drawn: other draws gave a min cosine to fp32 on 200 photo crops of 0.991-0.993 (0.987-0.991
    with the second stage in int8 too)."""
    import skimage.data

    photos = [getattr(skimage.data, name)() for name in CALIBRATION_PHOTOS]
    photos = [photo[0] if isinstance(photo, tuple) else photo for photo in photos]  # the motorcycle's left view
    return [Image.fromarray(crop).convert("RGB") for crop in random_crops(photos, per_photo)]
