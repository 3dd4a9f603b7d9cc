"""`auto` picks CLIP when its weights can be had, else falls back to effnet-lite0 quickly, with no network call."""
import socket

import pytest

from indexer.models import OFFLINE_NOTICE, load_embedder, registry


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Each test starts with an empty registry; the shared instances of other tests are put back after."""
    monkeypatch.setattr(registry, "_loaded", {})


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network call attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield calls


def test_auto_falls_back_offline_without_network_call(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(registry, "cached_clip_weights", lambda spec: None)
    embedder = load_embedder("auto", device="cpu")
    assert embedder.name == "effnet-lite0"
    assert embedder.notice == OFFLINE_NOTICE
    assert no_network == []
    # The shared instance is reachable under its real name too.
    assert load_embedder("effnet-lite0", device="cpu") is embedder


def test_auto_falls_back_when_hub_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(registry, "cached_clip_weights", lambda spec: None)
    probes = []

    def unreachable(address, timeout=None):
        probes.append((address, timeout))
        raise OSError("no route")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    assert registry.hub_reachable() is False
    assert probes and probes[0][1] <= registry.HUB_PROBE_TIMEOUT_S
    assert load_embedder("auto", device="cpu").name == "effnet-lite0"


def test_auto_uses_cached_clip_weights(monkeypatch, no_network, tiny_clip_spec, tiny_clip, tmp_path):
    """With CLIP weights in the local cache, auto loads them from disk (no network)."""
    import torch

    checkpoint = tmp_path / "clip.pt"
    torch.save(tiny_clip.model.state_dict(), checkpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(registry, "DEFAULT_CLIP_SPEC", tiny_clip_spec + "/laion")
    monkeypatch.setattr(registry, "cached_clip_weights", lambda spec: str(checkpoint))
    embedder = load_embedder("auto", device="cpu", precision="fp32")
    assert embedder.supports_text and embedder.notice is None
    assert embedder.dim == 32


# -- the real hub-cache lookup behind the offline claim (no stub) ------------------------------------------------
DEFAULT_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"  # where open_clip fetches DEFAULT_CLIP_SPEC's weights from


def fake_hub_cache(root, repo: str, files: dict[str, bytes], revision: str = "0123abcd" * 5, ref: str = "main"):
    """The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/SHA/FILE}."""
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (snapshot / name).write_bytes(content)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache of our own: HF_HUB_CACHE, which huggingface_hub reads once at import."""
    from huggingface_hub import constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


def test_cached_clip_weights_finds_the_default_models_files_in_the_hub_cache(hub_cache, no_network):
    from indexer.models import DEFAULT_CLIP_SPEC, ModelSpec

    spec = ModelSpec.parse(DEFAULT_CLIP_SPEC)
    assert registry.cached_clip_weights(spec) is None  # empty cache
    fake_hub_cache(hub_cache, "some/other-repo", {"open_clip_model.safetensors": b"x"})
    assert registry.cached_clip_weights(spec) is None  # another repo's weights are not ours
    snapshot = fake_hub_cache(hub_cache, DEFAULT_REPO, {"open_clip_pytorch_model.bin": b"bin"})
    assert registry.cached_clip_weights(spec) == str(snapshot / "open_clip_pytorch_model.bin")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"st")  # both: safetensors is preferred
    assert registry.cached_clip_weights(spec) == str(snapshot / "open_clip_model.safetensors")
    assert registry.cached_clip_weights(ModelSpec.parse("open_clip:ViT-B-32/no-such-tag")) is None
    assert no_network == []


def test_cached_clip_weights_follows_refs_main_to_its_snapshot(hub_cache):
    from indexer.models import DEFAULT_CLIP_SPEC, ModelSpec

    spec = ModelSpec.parse(DEFAULT_CLIP_SPEC)
    fake_hub_cache(hub_cache, DEFAULT_REPO, {"open_clip_model.safetensors": b"old"}, revision="a" * 40)
    # refs/main now names a snapshot that is not downloaded: the old one is not used in its place
    fake_hub_cache(hub_cache, DEFAULT_REPO, {}, revision="b" * 40)
    assert registry.cached_clip_weights(spec) is None
    current = fake_hub_cache(hub_cache, DEFAULT_REPO, {"open_clip_model.safetensors": b"new"}, revision="b" * 40)
    assert registry.cached_clip_weights(spec) == str(current / "open_clip_model.safetensors")


def test_auto_loads_cached_weights_under_the_tag_name_the_index_cache_keys_on(
        hub_cache, monkeypatch, no_network, tiny_clip_spec, tiny_clip, tmp_path):
    """No stub: the weights are found by the real lookup in a hub cache laid out on disk, and the embedder is
    named by its tag (not the snapshot path), so the index cache directory and the index's model check match
    an index built when the weights were downloaded by name."""
    import open_clip
    import torch
    from open_clip import pretrained
    from PIL import Image

    from indexer import GalleryIndex, open_index
    from indexer.build import index_dir_for

    name = tiny_clip_spec.split(":", 1)[1]
    monkeypatch.setitem(pretrained._PRETRAINED, name, {"laion": {"hf_hub": "test-org/tiny-clip/"}})
    assert open_clip.get_pretrained_cfg(name, "laion")["hf_hub"] == "test-org/tiny-clip/"
    tag = f"{tiny_clip_spec}/laion"
    monkeypatch.setattr(registry, "DEFAULT_CLIP_SPEC", tag)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = fake_hub_cache(hub_cache, "test-org/tiny-clip", {})
    torch.save(tiny_clip.model.state_dict(), snapshot / "open_clip_pytorch_model.bin")

    embedder = load_embedder("auto", device="cpu", precision="fp32")
    assert embedder.name == tag and embedder.notice is None and embedder.supports_text and embedder.dim == 32
    assert no_network == []
    source = {"kind": "dataset", "dataset": "someone/photos", "split": "train"}
    assert index_dir_for(embedder.name, source) == index_dir_for(tag, source)
    assert str(snapshot) not in str(index_dir_for(embedder.name, source))
    built = GalleryIndex(32, tag).save(tmp_path / "ix")  # an index built with the weights fetched by name
    assert open_index(built, embedder).model == tag  # opens with the cached weights: no mismatch
    red = Image.new("RGB", (32, 32), "red")
    # The weights really came from the cache file (the shared instance may run in bf16: compare directions).
    cosine = float(embedder.encode_images([red])[0] @ tiny_clip.encode_images([red])[0])
    assert cosine > 0.999
