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
