"""Siamese trainer on small synthetic identities, head save/load, CLI, and one-shot evaluation."""
import json

import numpy as np
import pytest
import torch

from indexer.calibration import accuracy_at, calibrate, equal_error_rate, roc_auc
from indexer.siamese.__main__ import main
from indexer.sources import image_folder, load_labelled
from indexer.siamese.head import load_head
from indexer.siamese.losses import SiameseLoss
from indexer.siamese.train import TrainConfig, split_identities, train
from indexer.verify import Verifier
from verify_support import identity_image, tiny_embedder, write_identity_folder


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return tiny_embedder(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_identity_folder(tmp_path_factory.mktemp("identities"), identities=16, samples=5)


def test_image_folder_identity_is_the_relative_folder_path(folder):
    data = load_labelled(str(folder))
    assert len(data) == 80 and len(set(data.identities)) == 16
    assert data.identities[0] == "group0/id00"  # nested path, like Omniglot's ALPHABET/characterNN
    with pytest.raises(ValueError, match="sub-folders"):
        image_folder(folder / "group0" / "id00")


def test_split_holds_out_whole_identities():
    ids = [f"p{k}" for k in range(10) for _ in range(3)] + ["lonely"]
    train_ids, val_ids, dropped = split_identities(ids, 0.2, seed=1)
    assert not train_ids & val_ids and len(val_ids) == 2 and dropped == {"lonely"}
    assert train_ids | val_ids == {f"p{k}" for k in range(10)}


@pytest.mark.parametrize("kind", ["contrastive", "triplet", "bce"])
def test_loss_prefers_separated_identities(kind):
    y = torch.tensor([0, 0, 1, 1])
    good = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]]), dim=1)
    bad = good[[0, 2, 1, 3]]  # same vectors, identities swapped across clusters
    loss = SiameseLoss(kind)
    assert loss(good, y) < loss(bad, y)


@pytest.mark.parametrize("kind", ["contrastive", "triplet", "bce"])
def test_training_lowers_the_loss_and_separates_unseen_identities(kind, folder, embedder, tmp_path):
    config = TrainConfig(loss=kind, views=2, epochs=25, patience=25, batch_identities=6, per_identity=3,
                         hidden_dim=64, out_dim=16, lr=3e-3, val_fraction=0.25, seed=0, progress=False,
                         out=str(tmp_path / kind))
    result = train(config, data=load_labelled(str(folder)), embedder=embedder)
    metrics = result.head.card["metrics"]
    assert metrics["train_loss_after"] < 0.8 * metrics["train_loss_before"]
    assert metrics["val_auc"] > 0.75  # validation identities were never seen in training; chance is 0.5
    card = json.loads((tmp_path / kind / "card.json").read_text())
    assert card["loss"] == kind and card["backbone"] == embedder.name
    assert card["data"]["val_identities"] == 4 and card["data"]["train_identities"] == 12
    assert "not seen in training" in card["threshold"]["how"]
    # the saved head reproduces the trained one
    loaded = load_head(tmp_path / kind)
    features = embedder.encode_images([identity_image(0, 0), identity_image(1, 0)])
    np.testing.assert_allclose(loaded.project(features), result.head.project(features), atol=1e-6)
    # The card's threshold is the equal-error-rate threshold of the held-out identities' pairs, as the app
    # scores them (the head's cosine distance): recomputed here from the images, not read back from the card.
    data = load_labelled(str(folder))
    _, val_ids, _ = split_identities(data.identities, config.val_fraction, config.seed)
    held_out = [k for k, identity in enumerate(data.identities) if identity in val_ids]
    verifier = Verifier(embedder, heads=[loaded])
    vectors = [r.vector for r in verifier.represent_many([data.images[k] for k in held_out], loaded.mode)]
    pairs = [(a, b) for a in range(len(held_out)) for b in range(a + 1, len(held_out))]
    distances = np.array([verifier.distance(vectors[a], vectors[b], loaded.mode) for a, b in pairs])
    same = [data.identities[held_out[a]] == data.identities[held_out[b]] for a, b in pairs]
    expected = calibrate(-distances, same)
    assert card["threshold"]["value"] == pytest.approx(-expected.threshold, abs=1e-4)
    assert loaded.threshold == pytest.approx(card["threshold"]["value"])
    assert metrics["val_auc"] == pytest.approx(expected.auc, abs=1e-4)
    assert metrics["val_eer"] == pytest.approx(expected.eer, abs=1e-6)
    assert metrics["val_accuracy_at_threshold"] == pytest.approx(expected.accuracy, abs=1e-6)


def test_cli_train_then_eval_pairs_uses_the_card_threshold(folder, embedder, tmp_path, capsys):
    out = tmp_path / "head"
    assert main(["train", "--dataset", str(folder), "--backbone", embedder.name, "--out", str(out), "--loss", "triplet",
                 "--views", "2", "--epochs", "3", "--quiet"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["out"] == str(out)
    pairs = tmp_path / "pairs.csv"
    rows = ["image_a,image_b,same_person", "group0/id00/s0.png,group0/id00/s1.png,1",
            "group0/id00/s0.png,group1/id01/s0.png,0", "group0/id02/s0.png,group0/id02/s3.png,1",
            "group0/id02/s0.png,missing.png,0"]
    pairs.write_text("\n".join(rows) + "\n")
    assert main(["eval", "--mode", "general", "--head", str(out), "--pairs", str(pairs), "--images", str(folder)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threshold"] == pytest.approx(load_head(out).threshold)
    assert "head's card" in result["threshold_source"]
    assert result["pairs_scored"] == 3 and result["pairs_skipped"] == 1
    assert "missing.png" in result["skipped"][0]["reason"]
    # The figures are those of the three readable pairs, scored as the app scores them with this head.
    verifier = Verifier(embedder, heads=[load_head(out)])
    scored = [(folder / a, folder / b, same == "1") for a, b, same in (row.split(",") for row in rows[1:4])]
    distances = np.array([verifier.compare(a, b, "general").distance for a, b, _ in scored])
    same = [label for _, _, label in scored]
    assert (result["same_pairs"], result["different_pairs"]) == (2, 1)
    assert result["accuracy"] == pytest.approx(accuracy_at(-distances, same, -result["threshold"]))
    assert result["roc_auc"] == pytest.approx(roc_auc(-distances, same))
    assert result["eer"] == pytest.approx(equal_error_rate(-distances, same)[0])


def test_oneshot_eval_reads_the_standard_layout(tmp_path, embedder):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from make_oneshot_runs import make_runs

    from indexer.siamese.evaluate import eval_oneshot
    from indexer.verify import Verifier

    root = tmp_path / "alphabets"
    for a in range(2):
        for c in range(6):
            folder = root / f"alpha{a}" / f"character{c + 1:02d}"
            folder.mkdir(parents=True)
            image = identity_image(a * 10 + c, 0)
            for drawer in range(1, 4):  # every drawer draws the same image: one-shot must be perfect
                image.save(folder / f"{a}{c:03d}_{drawer:02d}.png")
    make_runs(root, tmp_path / "runs", runs=4, ways=5, seed=3)
    lines = (tmp_path / "runs" / "run01" / "class_labels.txt").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("run01/test/item01.png run01/training/class")
    result = eval_oneshot(Verifier(embedder), "general", tmp_path / "runs")
    assert result["runs"] == 4 and result["ways"] == 5 and result["mean_accuracy"] == 1.0


def test_saved_dataset_and_parquet_with_identity_column(tmp_path):
    import datasets

    images = [identity_image(k, j) for k in range(3) for j in range(2)]
    ds = datasets.Dataset.from_dict(
        {"photo": images, "person": [f"p{k}" for k in range(3) for _ in range(2)]},
        features=datasets.Features({"photo": datasets.Image(), "person": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    ds.to_parquet(str(tmp_path / "data.parquet"))
    for source in (tmp_path / "saved", tmp_path / "data.parquet"):
        data = load_labelled(str(source), identity_column="person")
        assert data.identities == ["p0", "p0", "p1", "p1", "p2", "p2"]
        assert np.array_equal(np.asarray(data.images[2].convert("RGB")), np.asarray(images[2]))  # image column found
    with pytest.raises(ValueError, match="--identity-column"):
        load_labelled(str(tmp_path / "saved"))
