"""TWINSIGHT_PRECISION=int8: the image towers' Linear layers in int8 (models/quantize.py), on tiny random models."""
import numpy as np
import pytest
import torch

from indexer import CapabilityError, create_embedder
from indexer.device import cpu_has_fast_int8, pick_dtype
from indexer.models.quantize import Int8Linear, Int8SelfAttention

needs_int8 = pytest.mark.skipif(not cpu_has_fast_int8(), reason="this CPU has no AMX-int8 or VNNI")


def _linears(module: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in module.modules())


@needs_int8
@pytest.mark.parametrize("which", ["open_clip", "hf_vit", "hf_clip"])
def test_int8_image_towers_agree_with_fp32_and_leave_the_text_tower(which, tiny_clip_spec, tiny_vit_dir, tiny_hf_clip_dir,
                                                                    photos):
    spec = {"open_clip": tiny_clip_spec, "hf_vit": f"hf:{tiny_vit_dir}", "hf_clip": f"hf:{tiny_hf_clip_dir}"}[which]
    loaded = {}
    for precision in ("fp32", "int8"):
        torch.manual_seed(0)  # the same random open_clip weights in both (the hf ones are read from disk)
        loaded[precision] = create_embedder(spec, device="cpu", precision=precision)
    full, int8 = loaded["fp32"], loaded["int8"]
    assert int8.int8 and not full.int8 and "int8" in int8.description
    tower = {"open_clip": lambda m: m.visual, "hf_vit": lambda m: m, "hf_clip": lambda m: m.vision_model}[which]
    assert _linears(tower(full.model)) > 0 and _linears(tower(int8.model)) == 0
    assert any(isinstance(m, Int8Linear) for m in tower(int8.model).modules())
    assert "_image_features" in int8.traced.graphs  # the int8 forward still runs as a checked graph
    images = list(photos.values())
    a, b = full.encode_images(images), int8.encode_images(images)
    assert b.dtype == np.float32 and (a * b).sum(1).min() >= 0.99
    if which == "hf_clip":  # the projection beside the vision model is part of the image tower too
        assert isinstance(int8.model.visual_projection, Int8Linear)
    if int8.supports_text:  # the text tower keeps its float Linear layers: the same texts as the float model's
        text = (lambda m: m.transformer) if which == "open_clip" else (lambda m: m.text_model)
        assert _linears(text(int8.model)) == _linears(text(full.model)) > 0
        texts = ["a photo of a cat", "a dog"]
        assert (full.encode_texts(texts) * int8.encode_texts(texts)).sum(1).min() >= 0.99


@needs_int8
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_follows_the_float_one_and_keeps_the_input_dtype(dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(5, 7, 64)
    out = Int8Linear(linear.weight, linear.bias)(x.to(dtype))
    assert out.dtype == dtype and out.shape == (5, 7, 48)
    assert torch.nn.functional.cosine_similarity(out.float().flatten(), linear(x).detach().flatten(), 0) > 0.999


@needs_int8
@pytest.mark.parametrize("batch_first", [True, False])
def test_int8_attention_follows_multihead_attention_and_refuses_masks(batch_first):
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        expected, _ = attention(x, x, x, need_weights=False)
        int8 = Int8SelfAttention(attention)
        got, _ = int8(x, x, x, need_weights=False)
    assert got.shape == expected.shape
    assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), 0) > 0.999
    with pytest.raises(CapabilityError, match="self-attention"):
        int8(x, x, x, attn_mask=torch.zeros(5, 5))
    with pytest.raises(CapabilityError, match="self-attention"):
        int8(x, torch.randn(3, 5, 32), x)


def test_int8_is_refused_where_the_cpu_or_device_cannot_run_it(monkeypatch, tiny_clip_spec):
    with pytest.raises(CapabilityError, match="TWINSIGHT_PRECISION=auto"):
        pick_dtype(torch.device("cuda"), "int8")
    monkeypatch.setattr("indexer.device.cpu_has_fast_int8", lambda: False)
    with pytest.raises(CapabilityError, match="AMX-int8 or VNNI"):
        pick_dtype(torch.device("cpu"), "int8")
    monkeypatch.setenv("TWINSIGHT_PRECISION", "int8")  # the setting takes the same way
    with pytest.raises(CapabilityError, match="TWINSIGHT_PRECISION=auto"):
        create_embedder(tiny_clip_spec, device="cpu")


@needs_int8
def test_int8_uses_auto_float_dtype_and_refuses_fine_tuning(tiny_clip_spec):
    int8 = create_embedder(tiny_clip_spec, device="cpu", precision="int8")
    assert int8.dtype == pick_dtype(torch.device("cpu"), "auto")  # norms, attention scores and the text tower
    with pytest.raises(CapabilityError, match="TWINSIGHT_PRECISION=auto"):
        int8.top_module(1)


@needs_int8
def test_int8_effnet_runs_its_convolutions_in_int8_and_agrees_with_fp32(photos):
    """The real EfficientNet-Lite0 (weights ship in a package): int8 convolutions, not only the classifier."""
    from indexer.models.effnet_int8 import Int8Conv

    full = create_embedder("effnet-lite0", device="cpu", precision="fp32")
    int8 = create_embedder("effnet-lite0", device="cpu", precision="int8")
    assert int8.int8 and "int8" in int8.description and "_image_features" in int8.traced.graphs
    quantized = [m for m in int8.model.int8_features.modules() if isinstance(m, Int8Conv)]
    assert len(quantized) == 40  # all but the stem's and the first two stages' 9 of 49
    assert not any(isinstance(m, torch.nn.Conv2d) for m in int8.model.int8_features.blocks.modules())
    images = list(photos.values())
    a, b = full.encode_images(images), int8.encode_images(images)
    assert b.dtype == np.float32 and (a * b).sum(1).min() >= 0.99
    top = [[p[0].label for p in embedder.classify(images[:2])] for embedder in (full, int8)]  # the cat, the espresso
    assert top[0] == top[1]
