"""int8 image towers: every Linear layer (and the projections of torch's MultiheadAttention) as oneDNN dynamic int8.

Weights are quantized once, per output channel (symmetric); each call quantizes its input per tensor from its own
range (dynamic), so there is no calibration data to ship or to go stale. oneDNN runs the product on AMX-int8 or
VNNI. Everything else (attention scores, norms, GELU, convolutions) keeps the model's float dtype.

Why this and not the alternatives (docs/dev/MEASUREMENT-NOTES.md, int8): torchao's int8 through torch.compile was
slower than eager bf16 on ViT-B-32 and compiled for ~100 s; torch.ao's quantize_dynamic leaves
MultiheadAttention's projections (a third of ViT's Linear work) in float. These are plain ops, so the forward
still traces into a checked TorchScript graph (models/tracing.py).
"""
from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F

from ..errors import CapabilityError


@contextlib.contextmanager
def _quantized_engine(name: str):
    """Pack weights for `name`'s kernels: the packed weights carry their engine, so the setting is needed only here."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


class Int8Linear(torch.nn.Module):
    """y = x W^T + b with W in int8 (per output channel) and x quantized per call; returns x's dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        w = weight.detach().float()
        scales = (w.abs().amax(1).clamp(min=1e-12) / 127).double()
        zeros = torch.zeros(len(w), dtype=torch.long)
        with warnings.catch_warnings(), _quantized_engine("onednn"):
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices; the kernels themselves stay
            qweight = torch.quantize_per_channel(w, scales, zeros, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())
        self.in_features, self.out_features = w.shape[1], w.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The kernel takes and gives float32; reduce_range=False: oneDNN's int8 has no overflow to avoid.
        return torch.ops.quantized.linear_dynamic(x.float(), self._packed, False).to(x.dtype)


class Int8SelfAttention(torch.nn.Module):
    """torch.nn.MultiheadAttention's self-attention without masks (what ViT image towers use), with int8
    projections: MultiheadAttention keeps its input projection as a bare matrix, which no Linear-swap reaches."""

    def __init__(self, attention: torch.nn.MultiheadAttention):
        super().__init__()
        self.heads, self.batch_first = attention.num_heads, attention.batch_first
        self.qkv = Int8Linear(attention.in_proj_weight, attention.in_proj_bias)
        self.out_proj = Int8Linear(attention.out_proj.weight, attention.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key is not query or value is not query or key_padding_mask is not None or attn_mask is not None or is_causal:
            raise CapabilityError("int8 attention covers unmasked self-attention only (image towers); "
                                  "set TWINSIGHT_PRECISION=auto for this model.")
        x = query if self.batch_first else query.transpose(0, 1)
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = self.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, width))
        return (y if self.batch_first else y.transpose(0, 1)), None


def _plain_attention(module: torch.nn.Module) -> bool:
    return (isinstance(module, torch.nn.MultiheadAttention) and module._qkv_same_embed_dim and module.bias_k is None
            and not module.add_zero_attn)


def quantize_linears(module: torch.nn.Module, children: tuple[str, ...] | None = None) -> int:
    """Swap the Linear layers and plain self-attentions in `module` (in its `children` of those names only, if
    given) for int8 ones, in place; how many weights became int8."""
    swapped = 0
    for name, child in module.named_children():
        if children is not None and name not in children:
            continue
        if _plain_attention(child):
            replacement = Int8SelfAttention(child)
        elif type(child) is torch.nn.Linear:  # not subclasses: MultiheadAttention's out_proj is swapped above
            replacement = Int8Linear(child.weight, child.bias)
        else:
            swapped += quantize_linears(child)
            continue
        swapped += sum(p.numel() for p in child.parameters())
        setattr(module, name, replacement)
    return swapped
