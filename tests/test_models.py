"""The embedding engine: every backend through the one Embedder interface."""
import threading

import numpy as np
import pytest
import torch

from indexer import CapabilityError, create_embedder, load_embedder
from indexer.augment import random_crops
from indexer.brute import neighbour_agreement
from indexer.models import ModelSpec, Backend


def _assert_normalized(vectors, dim):
    assert vectors.dtype == np.float32
    assert vectors.shape[1] == dim
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("auto", ModelSpec(Backend.AUTO)),
        ("effnet-lite0", ModelSpec(Backend.EFFNET_LITE0)),
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", ModelSpec(Backend.OPEN_CLIP, "ViT-B-32", "laion2b_s34b_b79k")),
        ("open_clip:ViT-B-32//ckpt/model.pt", ModelSpec(Backend.OPEN_CLIP, "ViT-B-32", "/ckpt/model.pt")),
        ("open_clip:hf-hub:laion/CLIP-ViT-B-32", ModelSpec(Backend.OPEN_CLIP, "hf-hub:laion/CLIP-ViT-B-32")),
        ("hf:openai/clip-vit-base-patch32", ModelSpec(Backend.HF, "openai/clip-vit-base-patch32")),
    ],
)
def test_spec_parsing_round_trips(spec, expected):
    parsed = ModelSpec.parse(spec)
    assert parsed == expected
    assert ModelSpec.parse(str(parsed)) == parsed


@pytest.mark.parametrize("bad", ["clip", "torch:resnet", "hf:", "open_clip:"])
def test_unknown_spec_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="model spec"):
        ModelSpec.parse(bad)


def test_open_clip_images_and_texts(tiny_clip, photos):
    images = list(photos.values())
    vectors = tiny_clip.encode_images(images)
    _assert_normalized(vectors, 32)
    assert tiny_clip.dim == 32
    # Batching must not change results.
    one_by_one = tiny_clip.encode_images(images, batch_size=1)
    np.testing.assert_allclose(vectors, one_by_one, atol=2e-2 if tiny_clip.dtype == torch.bfloat16 else 1e-5)
    texts = tiny_clip.encode_texts(["a photo of a cat", "a dog", "a car"])
    _assert_normalized(texts, 32)
    assert not np.allclose(texts[0], texts[1])
    assert tiny_clip.encode_images([]).shape == (0, 32)


def test_open_clip_zero_shot_is_a_sorted_distribution(tiny_clip, photos):
    [predictions] = tiny_clip.zero_shot([photos["chelsea"]], ["cat", "dog", "car", "boat"], top_k=4)
    scores = [p.score for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-4)
    assert {p.label for p in predictions} == {"cat", "dog", "car", "boat"}
    with pytest.raises(ValueError, match="template"):
        tiny_clip.zero_shot([photos["chelsea"]], ["cat"], template="no placeholder")


def test_open_clip_local_checkpoint_file(tiny_clip, tiny_clip_spec, photos, tmp_path):
    """A checkpoint file given as PRETRAINED loads exactly the saved weights."""
    checkpoint = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), checkpoint)
    reloaded = create_embedder(f"{tiny_clip_spec}/{checkpoint}")  # same default device and precision as tiny_clip
    np.testing.assert_allclose(
        reloaded.encode_images([photos["coffee"]]), tiny_clip.encode_images([photos["coffee"]]), atol=1e-5
    )


def test_bf16_path_agrees_with_fp32(tiny_clip_spec, photos):
    full = create_embedder(tiny_clip_spec, device="cpu", precision="fp32")
    fast = create_embedder(tiny_clip_spec, device="cpu", precision="bf16")
    assert full.dtype == torch.float32 and fast.dtype == torch.bfloat16
    fast.model.load_state_dict({k: v.to(torch.bfloat16) for k, v in full.model.state_dict().items()})
    a = fast.encode_images(list(photos.values()))
    b = full.encode_images(list(photos.values()))
    assert a.dtype == np.float32
    assert (a * b).sum(1).min() > 0.99


def test_hf_clip_gives_images_and_texts(tiny_hf_clip_dir, photos):
    embedder = create_embedder(f"hf:{tiny_hf_clip_dir}", device="cpu", precision="fp32")
    assert embedder.supports_text and not embedder.supports_classify
    _assert_normalized(embedder.encode_images([photos["chelsea"], photos["rocket"]]), 24)
    texts = embedder.encode_texts(["a photo of a cat.", "a dog"])
    _assert_normalized(texts, 24)
    assert not np.allclose(texts[0], texts[1])


def test_hf_vision_model_gives_pooled_features_and_refuses_text(tiny_vit_dir, photos):
    embedder = create_embedder(f"hf:{tiny_vit_dir}", device="cpu", precision="fp32")
    _assert_normalized(embedder.encode_images([photos["coffee"]]), 32)
    with pytest.raises(CapabilityError, match="no text tower"):
        embedder.encode_texts(["a cat"])
    with pytest.raises(CapabilityError, match="classifier head"):
        embedder.classify([photos["coffee"]])


def test_hf_image_classifier_gives_its_labels(tiny_vit_classifier_dir, photos):
    embedder = create_embedder(f"hf:{tiny_vit_classifier_dir}", device="cpu", precision="fp32")
    assert embedder.supports_classify
    assert embedder.labels == ["apple", "banana", "cherry"]
    [predictions] = embedder.classify([photos["coffee"]], top_k=2)
    assert len(predictions) == 2 and predictions[0].score >= predictions[1].score
    assert {p.label for p in predictions} <= {"apple", "banana", "cherry"}
    _assert_normalized(embedder.encode_images([photos["coffee"]]), 32)


def test_effnet_real_weights_recognise_real_photos(effnet, photos):
    cat, coffee = effnet.classify([photos["chelsea"], photos["coffee"]], top_k=3)
    assert any("cat" in p.label for p in cat), cat
    assert any(p.label in ("espresso", "cup") for p in coffee), coffee
    vectors = effnet.encode_images([photos["chelsea"], photos["coffee"]])
    _assert_normalized(vectors, 1280)
    with pytest.raises(CapabilityError, match="CLIP"):
        effnet.encode_texts(["a cat"])


def test_effnet_fast_path_agrees_with_fp32(effnet, photos):
    fp32 = create_embedder("effnet-lite0", device="cpu", precision="fp32")
    bf16 = create_embedder("effnet-lite0", device="cpu", precision="bf16")
    crops = random_crops(list(photos.values()), per_image=12)  # 48 views: neighbours are close calls
    a, b = fp32.encode_images(crops), bf16.encode_images(crops)
    assert (a * b).sum(1).min() > 0.99
    agreement = neighbour_agreement(a, b, k=10, tie=0.005)
    assert agreement.identical_up_to_ties >= 0.95 and agreement.overlap >= 0.95, agreement
    images = list(photos.values())
    assert [[p.label for p in top] for top in fp32.classify(images, 1)] == [[p.label for p in top] for top in bf16.classify(images, 1)]


def test_registry_shares_one_instance_across_threads(tiny_clip_spec):
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_embedder(tiny_clip_spec, device="cpu", precision="fp32"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(e) for e in results}) == 1


def test_concurrent_encoding_is_consistent(tiny_clip, photos):
    expected = tiny_clip.encode_images([photos["astronaut"]])
    outputs = []
    threads = [threading.Thread(target=lambda: outputs.append(tiny_clip.encode_images([photos["astronaut"]]))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outputs) == 6
    for out in outputs:
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_fast_pil_transform_equals_torchvision(tiny_clip_spec, photos):
    from PIL import Image
    from torchvision import transforms

    from indexer.models.transforms import PixelsToTensor, ResizeCenterCrop, fast_pil_transform

    mean, std = (0.48, 0.45, 0.41), (0.27, 0.26, 0.28)
    images = [Image.fromarray(photos["chelsea"]), Image.fromarray(photos["coffee"])]
    # Portrait, landscape, very wide, odd sizes, a short side already at the target (torchvision skips the resize).
    images += [images[0].resize(size) for size in ((301, 517), (517, 301), (400, 90), (64, 97), (222, 211), (211, 222), (211, 211))]
    for interpolation in (transforms.InterpolationMode.BICUBIC, transforms.InterpolationMode.BILINEAR):
        reference = transforms.Compose(
            [transforms.Resize(64, interpolation=interpolation), transforms.CenterCrop(56), transforms.ToTensor(), transforms.Normalize(mean, std)]
        )
        replaced = fast_pil_transform(reference)
        assert [type(step) for step in replaced.transforms] == [ResizeCenterCrop, PixelsToTensor]
        for image in images:
            expected = reference(image)
            out = replaced(image)
            assert out.shape == expected.shape == (3, 56, 56) and out.dtype == torch.float32 and out.is_contiguous()
            # One level of 8-bit rounding at most, in normalised units.
            torch.testing.assert_close(out, expected, atol=1.01 / (255 * min(std)), rtol=0)
            assert (out - expected).abs().mean() < 1e-3
    # A crop larger than the resize pads in torchvision: that pair is left alone.
    padded = fast_pil_transform(transforms.Compose([transforms.Resize(32), transforms.CenterCrop(40), transforms.ToTensor()]))
    assert [type(step) for step in padded.transforms] == [transforms.Resize, transforms.CenterCrop, transforms.ToTensor]
    embedder = create_embedder(tiny_clip_spec, device="cpu", precision="fp32")  # open_clip's own transform, rewritten
    assert isinstance(embedder._transform.transforms[0], ResizeCenterCrop)
    assert isinstance(embedder._transform.transforms[-1], PixelsToTensor)


def test_hf_plain_processors_run_as_pil_steps_with_the_same_pixels(tiny_hf_clip_dir, tiny_vit_dir, photos):
    from PIL import Image
    from transformers import SiglipImageProcessor

    from indexer.models.hf_backend import pil_transform

    images = [Image.fromarray(photos["astronaut"]).resize(size) for size in ((1067, 825), (300, 517), (90, 400))]
    for folder in (tiny_hf_clip_dir, tiny_vit_dir):  # shortest edge + centre crop (CLIP); fixed size (ViT)
        embedder = create_embedder(f"hf:{folder}", device="cpu", precision="fp32")
        assert embedder._transform is not None
        for image in images:
            expected = embedder._image_processor(images=image, return_tensors="pt")["pixel_values"][0]
            out = embedder.preprocess(image)
            assert out.shape == expected.shape and out.dtype == torch.float32
            torch.testing.assert_close(out, expected, atol=1.01 / (255 * min(embedder._image_processor.image_std)), rtol=0)
    siglip = SiglipImageProcessor(size={"height": 48, "width": 40})
    torch.testing.assert_close(pil_transform(siglip)(images[0]), siglip(images=images[0], return_tensors="pt")["pixel_values"][0], atol=0.0079, rtol=0)
    # A recipe with steps it does not reproduce (here padding) is left to the processor.
    assert pil_transform(SiglipImageProcessor(do_pad=True)) is None
    assert pil_transform(SiglipImageProcessor(rescale_factor=1 / 127.5)) is None


def test_convolutional_models_run_channels_last_with_the_same_answers(effnet, tiny_clip, photos):
    fp32 = create_embedder("effnet-lite0", device="cpu", precision="fp32")
    assert fp32.channels_last and not tiny_clip.channels_last  # a ViT's single patch convolution is left alone
    images = list(photos.values())
    nhwc = fp32.encode_images(images)
    classes = [[p.label for p in top] for top in fp32.classify(images, 3)]
    fp32.use_channels_last(False)
    assert not fp32.channels_last
    np.testing.assert_allclose(nhwc, fp32.encode_images(images), atol=1e-4)
    assert [[p.label for p in top] for top in fp32.classify(images, 3)] == classes


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_a_bad_numeric_setting_names_the_variable_and_the_fix(monkeypatch, tiny_clip_spec, value):
    from indexer.models.registry import create_embedder

    monkeypatch.setenv("TWINSIGHT_MODEL_WORKERS", value)
    with pytest.raises(ValueError, match=r"TWINSIGHT_MODEL_WORKERS=.* is not valid: set it to a whole number of at least 1"):
        create_embedder(tiny_clip_spec)


def test_numeric_settings_default_when_unset_or_empty_and_read_digits(monkeypatch):
    from indexer.config import settings

    monkeypatch.delenv("TWINSIGHT_DECODE_BUDGET_MB", raising=False)
    assert settings().decode_budget_mb == 1024
    monkeypatch.setenv("TWINSIGHT_DECODE_BUDGET_MB", " ")
    assert settings().decode_budget_mb == 1024
    monkeypatch.setenv("TWINSIGHT_DECODE_BUDGET_MB", "64_000")
    assert settings().decode_budget_mb == 64000


@pytest.mark.parametrize("which", ["effnet", "open_clip", "hf_vit", "hf_clip", "hf_classifier"])
def test_cpu_forwards_run_traced_with_bit_identical_results(monkeypatch, which, tiny_clip_spec, tiny_vit_dir,
                                                            tiny_hf_clip_dir, tiny_vit_classifier_dir, photos):
    spec = {"effnet": "effnet-lite0", "open_clip": tiny_clip_spec, "hf_vit": f"hf:{tiny_vit_dir}",
            "hf_clip": f"hf:{tiny_hf_clip_dir}", "hf_classifier": f"hf:{tiny_vit_classifier_dir}"}[which]
    traced = create_embedder(spec, device="cpu")
    monkeypatch.setenv("TWINSIGHT_TRACE", "0")
    eager = create_embedder(spec, device="cpu")
    eager.model.load_state_dict(traced.model.state_dict())  # the tiny open_clip model is random at each build
    forwards = ["_image_features"] + ["_logits"] * traced.supports_classify + ["_text_forward"] * traced.supports_text
    assert sorted(traced.traced.graphs) == sorted(forwards) and eager.traced.graphs == {}
    assert which not in ("open_clip", "hf_clip") or traced.supports_text  # the text graph is tested where there is one
    weights = {p.data_ptr() for p in traced.model.parameters()}
    assert all(p.data_ptr() in weights for graph in traced.traced.graphs.values() for p in graph.parameters())  # no copy
    calls = []
    for name, graph in list(traced.traced.graphs.items()):
        traced.traced.graphs[name] = lambda *inputs, graph=graph, name=name: calls.append((name, len(inputs[0]))) or graph(*inputs)
    images = list(photos.values())
    for batch in (images[:1], images, images * 3):  # batch sizes other than the trace's own (2)
        assert np.array_equal(traced.encode_images(batch, batch_size=len(batch)), eager.encode_images(batch, batch_size=len(batch)))
        if traced.supports_classify:
            assert traced.classify(batch, 3) == eager.classify(batch, 3)
    # every row went through the graphs (split between the streams too)
    for name in forwards[: 1 + traced.supports_classify]:
        assert sum(rows for called, rows in calls if called == name) == 1 + 4 * len(images)
    if traced.supports_text:
        long = "a very long query " + "about a dog running on a beach at sunset " * 30  # cut to the full context
        for texts in (["a cat"], [long], ["a cat", "", "a dog on a beach", long, "ünïcödé ✓"]):
            assert np.array_equal(traced.encode_texts(texts), eager.encode_texts(texts))
        assert sum(rows for called, rows in calls if called == "_text_forward") == 1 + 1 + 3  # 2 were cached


def test_a_forward_tracing_cannot_follow_stays_eager(caplog, tiny_clip_spec, photos):
    embedder = create_embedder(tiny_clip_spec, device="cpu")
    eager = embedder._image_features
    expected = embedder.encode_images(list(photos.values()))
    # Python that branches on the batch size: the trace (made at 2 rows) keeps one branch for every size.
    embedder._image_features = lambda pixels: eager(pixels) * (2.0 if pixels.shape[0] == 2 else 1.0)
    with caplog.at_level("WARNING", logger="indexer.models.base"):
        embedder._prepare_forward()
    assert "_image_features" not in embedder.traced.graphs and "_image_features: the traced forward differs from the eager one" in caplog.text

    def untraceable(pixels):
        if torch.jit.is_tracing():
            raise RuntimeError("data-dependent control flow")
        return eager(pixels)

    embedder._image_features = untraceable
    embedder._prepare_forward()
    assert "_image_features" not in embedder.traced.graphs and "_image_features: cannot trace the forward (data-dependent" in caplog.text
    del embedder._image_features
    np.testing.assert_array_equal(embedder.encode_images(list(photos.values())), expected)


def test_a_text_tower_that_skips_its_mask_when_nothing_is_padded_stays_eager(caplog, tiny_clip_spec):
    embedder = create_embedder(tiny_clip_spec, device="cpu")
    assert "_text_forward" in embedder.traced.graphs
    eager = embedder._text_forward
    # As some attention code does: a different computation when no row of the batch is padded (token id 0).
    embedder._text_forward = lambda tokens: eager(tokens) * (2.0 if bool((tokens == 0).any()) else 1.0)
    with caplog.at_level("WARNING", logger="indexer.models.base"):
        embedder._prepare_forward()
    # Traced on a padded batch, the graph keeps the padded branch; the check on the full-length text alone sees it.
    assert "_text_forward" not in embedder.traced.graphs and "_text_forward: the traced forward differs" in caplog.text
    assert "_image_features" in embedder.traced.graphs


def test_texts_are_embedded_once_and_the_cache_is_bounded(monkeypatch, tiny_clip_spec):
    embedder = create_embedder(tiny_clip_spec, device="cpu", precision="fp32")
    text_features, embedded = embedder._text_features, []
    embedder._text_features = lambda texts: embedded.append(list(texts)) or text_features(texts)
    first = embedder.encode_texts(["a cat", "a dog", "a cat"])
    assert embedded == [["a cat", "a dog"]] and np.array_equal(first[0], first[2])
    again = embedder.encode_texts(["a dog", "a car", "a cat"])
    assert embedded[1:] == [["a car"]]  # only the new text reached the text tower
    np.testing.assert_array_equal(again[[0, 2]], first[[1, 0]])
    np.testing.assert_allclose(again, embedder.postprocess(text_features(["a dog", "a car", "a cat"]).detach()), atol=1e-6)
    again[:] = 0  # the caller's array is its own
    assert np.array_equal(embedder.encode_texts(["a cat"])[0], first[0])
    monkeypatch.setattr(embedder._text_cache, "size", 2)
    embedder.encode_texts(["a bird"])  # over the bound: the least recently used ("a dog", "a car") go
    embedded.clear()
    embedder.encode_texts(["a cat", "a bird", "a dog"])
    assert embedded == [["a dog"]]


def test_a_traced_forward_runs_only_on_inputs_of_the_size_it_was_checked_at(effnet):
    graph, calls = effnet.traced.graphs["_image_features"], []
    effnet.traced.graphs["_image_features"] = lambda pixels: calls.append(tuple(pixels.shape)) or graph(pixels)
    try:
        with torch.inference_mode():
            other = effnet._model_input(torch.rand(2, 3, 160, 160))  # a size the trace was not checked at: eager
            assert torch.equal(effnet._run("_image_features", other), effnet._image_features(other)) and calls == []
            effnet._run("_image_features", effnet._model_input(torch.rand(2, 3, 224, 224)))
        assert calls == [(2, 3, 224, 224)]
    finally:
        effnet.traced.graphs["_image_features"] = graph
