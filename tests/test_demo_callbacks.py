"""Tab callbacks with a small injected model: fast, no browser."""
import gradio as gr
import numpy as np
import pytest
from PIL import Image

from demo import classification, pairwise, runtime


@pytest.fixture
def use_model(monkeypatch):
    def use(spec):
        monkeypatch.setattr(runtime.settings, "model", spec)
        return runtime.embedder()

    return use


@pytest.fixture
def image_files(tmp_path, photos):
    paths = {}
    for name, array in photos.items():
        paths[name] = str(tmp_path / f"{name}.png")
        Image.fromarray(array).save(paths[name])
    return paths


def test_zero_shot_classification_with_clip(use_model, tiny_clip_spec, image_files):
    use_model(tiny_clip_spec)
    assert classification.Source.ZERO_SHOT.value in classification.available_sources()
    labels, answered = classification.classify(image_files["chelsea"], classification.Source.ZERO_SHOT.value, "cat, dog, car", "a photo of a {}.", 2)
    assert set(labels) <= {"cat", "dog", "car"} and len(labels) == 2
    assert "Zero-shot" in answered


def test_head_classification_with_effnet(use_model, image_files):
    use_model("effnet-lite0")
    assert classification.available_sources() == [classification.Source.HEAD.value]
    labels, answered = classification.classify(image_files["coffee"], classification.Source.HEAD.value, "", "", 5)
    assert len(labels) == 5
    assert max(labels, key=labels.get) == "espresso"
    assert "classifier" in answered


@pytest.mark.parametrize(
    "labels, message", [("", "at least one label"), (",".join(f"l{i}" for i in range(200)), "at most 100"), ("x" * 3000, "over 2000")]
)
def test_bad_zero_shot_labels_are_friendly_errors(use_model, tiny_clip_spec, image_files, labels, message):
    use_model(tiny_clip_spec)
    with pytest.raises(gr.Error, match=message):
        classification.classify(image_files["chelsea"], classification.Source.ZERO_SHOT.value, labels, "a {}", 5)


def test_unreadable_upload_is_a_friendly_error(use_model, tmp_path):
    use_model("effnet-lite0")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(gr.Error, match="not an image format"):
        classification.classify(str(bad), classification.Source.HEAD.value, "", "", 5)
    with pytest.raises(gr.Error, match="No image"):
        classification.classify(None, classification.Source.HEAD.value, "", "", 5)


def test_pairwise_is_symmetric_and_identical_images_match(use_model, image_files):
    use_model("effnet-lite0")
    same, verdict = pairwise.compare(image_files["chelsea"], image_files["chelsea"], 0.5)
    assert same == pytest.approx(1.0, abs=1e-3) and "**match**" in verdict
    ab, _ = pairwise.compare(image_files["chelsea"], image_files["rocket"], 0.5)
    ba, verdict = pairwise.compare(image_files["rocket"], image_files["chelsea"], 0.5)
    assert ab == pytest.approx(ba, abs=1e-4)
    assert ab < same
    assert "no match" in pairwise.compare(image_files["chelsea"], image_files["rocket"], ab + 0.01)[1]


def test_pairwise_needs_both_images(use_model, image_files):
    use_model("effnet-lite0")
    with pytest.raises(gr.Error, match="both"):
        pairwise.compare(image_files["chelsea"], None)


def test_status_shows_model_device_and_notice(use_model, monkeypatch):
    model = use_model("effnet-lite0")
    monkeypatch.setattr(model, "notice", "offline: test notice")
    status = runtime.status_markdown()
    assert "effnet-lite0" in status and "cpu" in status and "offline: test notice" in status
