"""Stroke encoders trained end to end: data loading, training, save/load, resume, Verifier and siamese: spec."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from indexer.augment import scribble_writers
from indexer.sources import LabelledImages, image_files, image_folder
from indexer.siamese import encoder_train
from indexer.siamese.encoder import ENCODER_WEIGHTS_FILE, SiameseEncoder, build_encoder, ink_pixels
from indexer.siamese.encoder_train import EncoderConfig, split_groups, train_encoder
from indexer.siamese.head import load_head
from indexer.signature import SignatureError
from indexer.verify import Mode, Verifier

TINY = dict(architecture="conv4-28", ways=6, per_class=3, lr=3e-3, val_every=10, patience=100, val_ways=5,
            progress=False, checkpoint_seconds=0.0)


@pytest.fixture(scope="module")
def strokes() -> LabelledImages:
    """12 synthetic writers x 4 samples in two groups (group/writer), as an image-folder loader would give."""
    labelled = scribble_writers(n_writers=12, samples=4, seed=3)
    identities = [f"group{int(writer[-2:]) % 2}/{writer}" for _, writer in labelled]
    return LabelledImages([image for image, _ in labelled], identities, "synthetic strokes")


@pytest.fixture(scope="module")
def trained(strokes, tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "model"
    result = train_encoder(EncoderConfig(out=str(out), steps=40, seed=0, **TINY), data=strokes)
    return result, out


def test_training_lowers_the_loss_and_writes_a_card(trained):
    result, out = trained
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    card = json.loads((out / "card.json").read_text())
    assert card["format"] == "twinsight-siamese-encoder/1" and card["architecture"]["name"] == "conv4-28"
    assert 0 < card["threshold"]["value"] < 2 and "never seen in training" in card["threshold"]["how"]
    assert not (out / "checkpoint").exists()  # removed once the model is saved


def test_save_load_round_trip_is_safetensors_and_exact(trained, strokes, tmp_path):
    result, out = trained
    loaded = load_head(out)
    assert isinstance(loaded, SiameseEncoder) and loaded.threshold == result.encoder.threshold
    images = strokes.images[:5]
    assert np.allclose(loaded.encode(images), result.encoder.encode(images), atol=1e-6)
    # a pickle under the weights' name is refused unread
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "card.json").write_text((out / "card.json").read_text())
    torch.save(result.encoder.module.state_dict(), bad / ENCODER_WEIGHTS_FILE)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_head(bad)


def test_interrupted_training_resumes_to_the_same_weights(strokes, tmp_path, monkeypatch):
    config = dict(steps=16, seed=1, **TINY)
    straight = train_encoder(EncoderConfig(out=str(tmp_path / "straight"), **config), data=strokes).encoder
    real, calls = encoder_train.distort, {"n": 0}

    def crash_at_step_7(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder_train, "distort", crash_at_step_7)
    with pytest.raises(SystemExit, match="Interrupted at step 6"):
        train_encoder(EncoderConfig(out=str(tmp_path / "resumed"), **config), data=strokes)
    assert (tmp_path / "resumed" / "checkpoint" / "state.safetensors").is_file()
    result = train_encoder(EncoderConfig(out=str(tmp_path / "resumed"), **config), data=strokes)
    assert result.resumed_from == 6
    for a, b in zip(straight.module.state_dict().values(), result.encoder.module.state_dict().values()):
        assert torch.equal(a, b)


def test_validation_groups_are_disjoint_from_training():
    identities = [f"{alphabet}/c{k}" for alphabet in "ABCDE" for k in range(4)]
    train, val = split_groups(identities, 0.3, seed=0)
    assert not train & val and len(val) >= 6
    assert not {i.split("/")[0] for i in train} & {i.split("/")[0] for i in val}


def test_val_groups_is_refused_for_heads_which_split_identities(tmp_path, capsys):
    from indexer.siamese.__main__ import main

    assert main(["train", "--dataset", str(tmp_path), "--mode", "general", "--out", str(tmp_path / "h"),
                 "--val-groups", "writer1"]) == 2
    assert "--val-groups is for ink encoders" in capsys.readouterr().err


def test_named_validation_groups_resume_in_any_order_and_exclude_a_fraction(tmp_path):
    from indexer.siamese.__main__ import main
    from indexer.siamese.encoder_train import _resumable

    assert _resumable(EncoderConfig(val_groups=("B", "A"))) == _resumable(EncoderConfig(val_groups=("A", "B")))
    assert _resumable(EncoderConfig(val_groups=("A",))) != _resumable(EncoderConfig())
    assert "val_groups" not in _resumable(EncoderConfig())  # a checkpoint from before the option still resumes
    with pytest.raises(SystemExit):  # argparse: one way to choose the validation identities
        main(["train", "--dataset", str(tmp_path), "--mode", "signature", "--out", str(tmp_path / "e"),
              "--val-fraction", "0.2", "--val-groups", "A"])


def test_named_validation_groups_replace_the_drawn_fraction():
    identities = [f"{alphabet}/c{k}" for alphabet in "ABCDE" for k in range(4)]
    train, val = split_groups(identities, 0.3, seed=0, chosen=("E",))
    assert val == {f"E/c{k}" for k in range(4)} and train == set(identities) - val
    with pytest.raises(ValueError, match=r"--val-groups: no group \['F'\] in the data.*A, B, C, D, E"):
        split_groups(identities, 0.3, seed=0, chosen=("E", "F"))
    with pytest.raises(ValueError, match="no group would be left to train on"):
        split_groups(identities, 0.3, seed=0, chosen=tuple("ABCDE"))


def test_encoder_in_the_verifier_needs_no_shared_model(trained, strokes):
    _, out = trained
    verifier = Verifier(None, heads=[load_head(out)])
    same = verifier.compare(strokes.images[0], strokes.images[0], Mode.SIGNATURE)
    assert same.match and same.distance == pytest.approx(0.0, abs=1e-5)
    assert "encoder's card" in same.threshold_source and "trained end to end" in same.model
    blank = Image.new("RGB", (60, 40), "white")
    with pytest.raises(SignatureError):
        verifier.compare(blank, strokes.images[0], Mode.SIGNATURE)


def test_ink_pixels_keep_the_aspect_ratio_and_ink_polarity():
    image = Image.new("L", (300, 100), 255)
    image.paste(0, (20, 45, 280, 55))  # a dark horizontal bar
    square = ink_pixels(image, (28, 28))
    wide = ink_pixels(Image.eval(image, lambda v: 255 - v), (48, 112))  # light ink on dark paper
    assert square.shape == (56, 56) and wide.shape == (96, 224)
    assert square.max() > 0.9 and square.mean() < 0.3  # ink is 1 and the minority
    rows = np.flatnonzero(square.max(axis=1) > 0.5)
    assert rows.max() - rows.min() < 10  # a bar stays a bar: no stretching to the square
    assert wide.max() > 0.9 and wide.mean() < 0.3


def test_image_folder_follows_symlinked_folders_and_skips_duplicates(tmp_path):
    real = tmp_path / "real"
    for alphabet in ("A", "B"):
        for char in ("c1", "c2"):
            (real / alphabet / char).mkdir(parents=True)
            for k in range(2):
                Image.new("L", (8, 8), 40 * k + (alphabet == "B") * 7 + (char == "c2") * 3).save(real / alphabet / char / f"{k}.png")
    links = tmp_path / "links"
    links.mkdir()
    os.symlink(real / "A", links / "A", target_is_directory=True)
    os.symlink(real / "B", links / "B", target_is_directory=True)
    os.symlink(real / "A", links / "A-again", target_is_directory=True)  # the same files a second time
    data = image_folder(links)
    assert sorted(set(data.identities)) == ["A/c1", "A/c2", "B/c1", "B/c2"]
    assert len(data) == 8 and "4 duplicate files skipped" in data.description
    os.symlink(links, real / "B" / "c1" / "loop", target_is_directory=True)  # a loop back up is not followed
    assert len(image_files(links)) == 12


def test_siamese_spec_builds_and_searches_a_gallery(trained, strokes, tmp_path):
    from indexer import build_index
    from indexer.models import ModelSpec, load_embedder
    from indexer.models.base import CapabilityError

    _, out = trained
    folder = tmp_path / "gallery"
    for k, (image, identity) in enumerate(zip(strokes.images[:12], strokes.identities[:12])):
        (folder / identity).mkdir(parents=True, exist_ok=True)
        image.save(folder / identity / f"{k}.png")
    spec = f"siamese:{out}"
    assert str(ModelSpec.parse(spec)) == spec
    embedder = load_embedder(spec)
    index = build_index(folder, model=embedder, out=tmp_path / "ix", batch_size=4)
    assert len(index) == 12
    hits = index.search(strokes.images[5], k=1)
    assert hits[0].label == strokes.identities[5] and hits[0].score == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(CapabilityError):
        embedder.encode_texts(["a signature"])


def test_siamese_spec_refuses_a_head(tmp_path):
    from indexer.models.registry import create_embedder

    with pytest.raises(FileNotFoundError):
        create_embedder(f"siamese:{tmp_path / 'missing'}")


def test_architectures_build_and_keep_a_few_megabytes():
    from indexer.siamese.encoder import ARCHITECTURES

    for name, config in ARCHITECTURES.items():
        model = build_encoder(name)
        height, width = config["size"]
        out = model(torch.rand(2, 1, 2 * height, 2 * width))
        assert out.shape == (2, model.dim) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
        assert sum(p.numel() for p in model.parameters()) * 4 < 8e6, name


def test_cli_trains_an_encoder_in_signature_mode_and_evaluates_it(strokes, tmp_path, capsys):
    from indexer.siamese.__main__ import main

    data = tmp_path / "data"
    for k, (image, identity) in enumerate(zip(strokes.images, strokes.identities)):
        (data / identity).mkdir(parents=True, exist_ok=True)
        image.save(data / identity / f"{k}.png")
    out = tmp_path / "model"
    assert main(["train", "--dataset", str(data), "--mode", "signature", "--out", str(out), "--steps", "6",
                 "--ways", "4", "--per-class", "3", "--val-groups", "group1", "--quiet"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["architecture"] == "conv4-sig" and trained["steps_run"] == 6  # wide ink: the signature net
    assert trained["data"]["val_groups"] == ["group1"]  # the named folder validated, not a drawn one
    card = json.loads((out / "card.json").read_text())
    assert card["format"] == "twinsight-siamese-encoder/1" and "--steps 6" in card["training"]["command"]
    assert card["training"]["config"]["val_groups"] == ["group1"]
    files = sorted((data / "group0").glob("*/*.png"))
    rows = [f"{files[0].relative_to(data)},{files[1].relative_to(data)},1",
            f"{files[0].relative_to(data)},{files[-1].relative_to(data)},0"]
    (tmp_path / "pairs.csv").write_text("image_a,image_b,same\n" + "\n".join(rows) + "\n")
    assert main(["eval", "--mode", "signature", "--head", str(out), "--pairs", str(tmp_path / "pairs.csv"),
                 "--images", str(data)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pairs_scored"] == 2 and "trained end to end" in result["model"]
    # signatures: fused with effnet-lite0 (the default companion), at the threshold calibrated on the fused vectors
    assert card["companion"]["model"] == "effnet-lite0" and "effnet-lite0" in result["model"]
    # centred blocks (siamese.fused): the encoder's mean, then effnet's pooled and stage-5 means over training images
    centres = load_head(out).centres
    assert [len(c) for c in centres] == [load_head(out).module.dim, 1280, 224] and "training images" in card["companion"]["how"]
    assert result["threshold"] == pytest.approx(card["companion"]["threshold"]["value"])
    assert result["threshold"] != pytest.approx(card["threshold"]["value"])
    # without --head, signature mode is evaluated with the shipped signature encoder
    assert main(["eval", "--mode", "signature", "--pairs", str(tmp_path / "pairs.csv"), "--images", str(data)]) == 0
    shipped = json.loads(capsys.readouterr().out)
    assert shipped["head"].endswith("signature-encoder") and shipped["threshold"] != result["threshold"]


def test_signature_mode_defaults_to_the_shipped_encoder_unless_the_user_loads_one(trained, monkeypatch):
    from indexer.siamese.shipped import SHIPPED, with_defaults

    card = json.loads((SHIPPED["signature"] / "card.json").read_text())
    assert "SigComp2011" in card["data"]["terms"] and "research" in card["data"]["terms"]
    assert card["training"]["command"].startswith("python -m indexer.siamese train")
    (default,) = with_defaults([])
    assert default.mode == "signature" and default.source == str(SHIPPED["signature"])
    verifier = Verifier(None, heads=[default])
    assert "never seen in training" in verifier.threshold(Mode.SIGNATURE).source
    mine = load_head(trained[1])
    assert with_defaults([mine]) == [mine]  # the user's own signature model wins
    monkeypatch.setenv("TWINSIGHT_DEFAULT_HEADS", "0")
    assert with_defaults([]) == []


@pytest.mark.parametrize("loss", ["triplet", "contrastive", "bce", "koch"])
def test_every_loss_trains_the_encoder(strokes, loss):
    result = train_encoder(EncoderConfig(steps=20, seed=0, loss=loss, **TINY), data=strokes)
    first, last = (h["train_loss"] for h in (result.history[0], result.history[-1]))
    assert np.isfinite(first) and last < first
    assert result.encoder.card["loss"] == loss
