"""Siamese heads that fine-tune the backbone's last blocks: trunk/top split, training, save/load, Verifier."""
import numpy as np
import pytest
import torch

from indexer.models.base import CapabilityError
from indexer.siamese.__main__ import main
from indexer.sources import load_labelled
from indexer.siamese.head import WEIGHTS_FILE, load_head
from indexer.siamese.train import TrainConfig, train
from indexer.verify import Verifier, prepare
from verify_support import identity_image, tiny_embedder, write_identity_folder


def _snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def trained(effnet, tmp_path_factory):
    """One short run with --fine-tune-blocks 1 on 8 small synthetic identities (4 held out)."""
    folder = write_identity_folder(tmp_path_factory.mktemp("ft-ids"), identities=8, samples=3)
    before = _snapshot(effnet.model)
    out = tmp_path_factory.mktemp("ft-head") / "head"
    config = TrainConfig(views=2, epochs=4, patience=4, steps_per_epoch=3, batch_identities=4, per_identity=3,
                         hidden_dim=32, out_dim=16, lr=3e-3, val_fraction=0.5, seed=0, progress=False,
                         fine_tune_blocks=1, top_lr_factor=0.3, out=str(out))
    result = train(config, data=load_labelled(str(folder)), embedder=effnet)
    return result, before, out


def test_untrained_top_on_trunk_features_reproduces_the_backbone(effnet):
    images = [identity_image(0, 0), identity_image(3, 1)]
    trunk = effnet.encode_trunk(images, 1)
    assert trunk.shape == (2, 192, 7, 7)  # input of EfficientNet-Lite0's last stage
    with torch.no_grad():
        pooled = torch.nn.functional.normalize(effnet.top_module(1)(trunk), dim=-1).numpy()
    np.testing.assert_allclose(pooled, effnet.encode_images(images), atol=2e-2)  # bf16 backbone vs fp32 copy
    with pytest.raises(ValueError, match="1 to 7"):
        effnet.top_module(8)


def test_fine_tuning_trains_the_heads_copy_and_leaves_the_shared_model_alone(trained, effnet):
    result, before, _ = trained
    card = result.head.card
    assert card["fine_tune_blocks"] == 1 and result.head.fine_tune_blocks == 1
    assert card["architecture"]["top_lr"] == pytest.approx(3e-3 * 0.3)
    assert card["metrics"]["train_loss_after"] < card["metrics"]["train_loss_before"]
    # the shared embedder is bit-for-bit what it was before training
    after = effnet.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # ... while the head's copy of the last block moved away from it
    top = result.head.top.state_dict()
    shared = {k: effnet.model.state_dict()[k].float() for k in ("blocks.6.0.conv_pw.weight", "conv_head.weight")}
    assert not torch.allclose(top["blocks.6.0.conv_pw.weight"], shared["blocks.6.0.conv_pw.weight"], atol=1e-3)
    assert not torch.allclose(top["conv_head.weight"], shared["conv_head.weight"], atol=1e-3)


def test_fine_tuned_head_round_trips_through_safetensors(trained, effnet):
    from safetensors import safe_open

    result, _, out = trained
    with safe_open(str(out / WEIGHTS_FILE), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("top.blocks.") for k in keys) and any(k.startswith("net.") for k in keys)
    loaded = load_head(out)
    assert loaded.fine_tune_blocks == 1 and loaded.top is not None
    trunk = effnet.encode_trunk([identity_image(1, 0), identity_image(2, 2)], 1)
    np.testing.assert_allclose(loaded.project_trunk(trunk), result.head.project_trunk(trunk), atol=1e-6)
    with pytest.raises(ValueError, match="project_trunk"):
        loaded.project(np.zeros((1, effnet.dim), np.float32))


def test_verifier_uses_the_fine_tuned_blocks(trained, effnet):
    _, _, out = trained
    head = load_head(out)
    verifier = Verifier(effnet, heads=[head])
    images = [identity_image(4, 0), identity_image(4, 1)]
    vectors = np.stack([r.vector for r in verifier.represent_many(images, "general")])
    expected = head.project_trunk(effnet.encode_trunk([prepare(i, "general") for i in images], 1))
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    result = verifier.compare(images[0], images[1], "general")
    assert "fine-tuned" in result.model and result.threshold == pytest.approx(head.threshold)


@pytest.mark.parametrize("which", ["effnet", "open_clip"])
def test_trunk_features_run_traced_once_a_fine_tuned_head_needs_them(which, monkeypatch, tiny_clip_spec, trained):
    from indexer.models.registry import create_embedder

    spec = {"effnet": "effnet-lite0", "open_clip": tiny_clip_spec}[which]
    traced = create_embedder(spec, device="cpu")
    with monkeypatch.context() as env:
        env.setenv("TWINSIGHT_TRACE", "0")
        eager = create_embedder(spec, device="cpu")
    eager.model.load_state_dict(traced.model.state_dict())  # the tiny open_clip model is random at each build
    assert not any(key.startswith("_trunk_forward") for key in traced.traced.graphs)  # only when a head asks
    if which == "effnet":  # as the app does: adding a fine-tuned head prepares its trunk
        Verifier(traced, heads=[load_head(trained[2])])
    else:
        traced.prepare_trunk(1)
    graph, rows = traced.traced.graphs["_trunk_forward/1"], []
    traced.traced.graphs["_trunk_forward/1"] = lambda pixels: rows.append(len(pixels)) or graph(pixels)
    images = [identity_image(i, i % 3) for i in range(5)]
    for batch in (images[:1], images, images * 3):
        assert torch.equal(traced.encode_trunk(batch, 1), eager.encode_trunk(batch, 1))
    assert sum(rows) == 1 + 5 + 15  # every row through the graph, split between the streams too
    traced.use_channels_last(traced.channels_last)  # a re-layout traces every forward again, the trunk's too
    assert "_trunk_forward/1" in traced.traced.graphs and eager.traced.graphs == {}


def test_a_fine_tuned_heads_projection_runs_traced_with_identical_results(trained, effnet, monkeypatch):
    head = load_head(trained[2])
    with monkeypatch.context() as env:
        env.setenv("TWINSIGHT_TRACE", "0")
        eager = load_head(trained[2])
        trunk = effnet.encode_trunk([identity_image(i, i % 3) for i in range(5)], 1)
        expected = {rows: eager.project_trunk(trunk[:rows]) for rows in (1, 2, 5)}
    assert all(not isinstance(f, torch.jit.ScriptModule) for f in eager._forwards.values())
    for rows in (1, 2, 5):
        assert np.array_equal(head.project_trunk(trunk[:rows]), expected[rows])
    (graph,) = head._forwards.values()  # one trunk size: one graph, traced on the first call
    assert isinstance(graph, torch.jit.ScriptModule)
    weights = {p.data_ptr() for p in [*head.top.parameters(), *head.module.parameters()]}
    assert all(p.data_ptr() in weights for p in graph.parameters())  # the head's own weights, not a copy


def test_open_clip_vit_fine_tunes_its_last_block(tmp_path):
    tiny_clip = tiny_embedder(tmp_path)  # seeded random weights: the run below is reproducible
    folder = write_identity_folder(tmp_path / "ids", identities=10, samples=3)
    before = _snapshot(tiny_clip.model)
    config = TrainConfig(views=2, epochs=3, patience=3, steps_per_epoch=3, batch_identities=4, per_identity=3,
                         hidden_dim=64, out_dim=16, lr=3e-3, val_fraction=0.4, seed=0, progress=False,
                         fine_tune_blocks=1, top_lr_factor=1.0, out=str(tmp_path / "head"))
    result = train(config, data=load_labelled(str(folder)), embedder=tiny_clip)
    # the random tiny ViT overfits fast; what matters here is that a trained state (not the initial one) was kept
    assert result.head.card["training"]["best_epoch"] >= 1
    assert result.head.card["metrics"]["train_loss_after"] < result.head.card["metrics"]["train_loss_before"]
    assert all(torch.equal(before[k], v) for k, v in tiny_clip.model.state_dict().items())
    shared = tiny_clip.model.visual.transformer.resblocks[-1].mlp.c_fc.weight.float()
    assert not torch.allclose(result.head.top.resblocks[0].mlp.c_fc.weight, shared, atol=1e-4)
    loaded = load_head(tmp_path / "head")
    images = [identity_image(1, 0), identity_image(2, 1)]
    trunk = tiny_clip.encode_trunk(images, 1)
    np.testing.assert_allclose(loaded.project_trunk(trunk), result.head.project_trunk(trunk), atol=1e-6)
    vectors = np.stack([r.vector for r in Verifier(tiny_clip, heads=[loaded]).represent_many(images, "general")])
    np.testing.assert_allclose(vectors, loaded.project_trunk(trunk), atol=1e-6)


def test_backbone_without_fine_tuning_support_gives_a_clear_error(tiny_vit_dir, tmp_path):
    from indexer import load_embedder

    hf = load_embedder(f"hf:{tiny_vit_dir}", device="cpu", precision="fp32")
    folder = write_identity_folder(tmp_path / "ids", identities=4, samples=2)
    with pytest.raises(CapabilityError, match="supports effnet-lite0, open_clip ViT"):
        train(TrainConfig(fine_tune_blocks=1, progress=False), data=load_labelled(str(folder)), embedder=hf)
    with pytest.raises(CapabilityError, match="supports effnet-lite0, open_clip ViT"):
        main(["train", "--dataset", str(folder), "--backbone", hf.name, "--out", str(tmp_path / "h"),
              "--fine-tune-blocks", "2", "--quiet"])
