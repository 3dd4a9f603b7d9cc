"""The public API as gradio_client sees it, against the real app: on the default offline model (auto, which falls
back to EfficientNet-Lite0 offline) and on a tiny CLIP model (text tower)."""
from __future__ import annotations

from pathlib import Path

import pytest

from app_server import ROOT, AppServer
from tiny_models import save_tiny_hf_clip

pytestmark = pytest.mark.e2e
EXAMPLES = ROOT / "assets" / "examples"
# endpoint -> the inputs that define the request; every other input must have a default
REQUIRED = {
    "/classify": {"image"},
    "/compare": {"image_a", "image_b"},
    "/enrol_and_compare": {"references", "questioned"},
    "/search": set(),  # an image or a text: either may be left out
    "/browse": set(),
    "/similar": {"item_id"},
    "/add_to_gallery": {"files"},
}


def start_app(workdir: Path, model: str, env: dict | None = None) -> AppServer:
    return AppServer(workdir, model=model, env=env)


@pytest.fixture(scope="module", params=["auto", "tiny-clip"])
def server(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"api-{request.param}")
    model = request.param if request.param == "auto" else f"hf:{save_tiny_hf_clip(workdir / 'tiny-clip')}"
    with start_app(workdir, model) as app:
        app.clip = request.param != "auto"
        yield app


def client_of(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


def example(name: str):
    from gradio_client import handle_file

    return handle_file(str(EXAMPLES / name))


def test_public_endpoints_and_their_required_inputs(server):
    api = client_of(server).view_api(return_format="dict", print_info=False)
    assert not api["unnamed_endpoints"]
    endpoints = api["named_endpoints"]
    assert set(endpoints) == set(REQUIRED)  # no /sync_gallery, no page plumbing
    for name, endpoint in endpoints.items():
        required = {p["parameter_name"] for p in endpoint["parameters"] if not p["parameter_has_default"]}
        assert required == REQUIRED[name], name


def test_each_endpoint_answers_with_only_its_required_inputs(server):
    client = client_of(server)
    labels, answered_by = client.predict(example("coffee.jpg"), api_name="/classify")
    assert len(labels["confidences"]) == 5 and ("classifier" in answered_by or "Zero-shot" in answered_by)
    similarity, distance, verdict, _, crops = client.predict(example("cat-a.jpg"), example("cat-a.jpg"), api_name="/compare")
    assert similarity == pytest.approx(1.0, abs=1e-3) and "Match" in verdict and "general mode" in verdict and len(crops) == 2
    *_, verdict, explanation, crops = client.predict([example("cat-a.jpg")], example("cat-b.jpg"), api_name="/enrol_and_compare")
    assert "general mode" in verdict and len(crops) == 2
    images, _, hits = client.predict(example("coffee.jpg"), api_name="/search")
    assert len(images) == len(hits) == 8 and hits[0]["label"] == "coffee cup"  # the built-in gallery holds this photo
    summary, again = client.predict(hits[1]["id"], api_name="/similar")
    assert again[0]["id"] == hits[1]["id"] and len(again) == 8 and str(hits[1]["id"]) in summary
    images, _, items = client.predict(api_name="/browse")
    assert len(images) == len(items) == 8 and len({item["id"] for item in items}) == 8
    message, _ = client.predict([example("cat-b.jpg")], api_name="/add_to_gallery")
    assert "Added 1" in message and "unlabelled" in message


def test_choice_values_are_accepted(server):
    client = client_of(server)
    sources = ["zero_shot", "gallery"] if server.clip else ["head", "gallery"]
    for source in sources:
        labels, answered_by = client.predict(example("cat-a.jpg"), source=source, labels="cat, dog, car", top_k=3,
                                             api_name="/classify")
        assert len(labels["confidences"]) == 3, source
    label = {"zero_shot": "Zero-shot", "head": "classifier", "gallery": "Gallery votes"}
    assert label[sources[-1]] in answered_by
    unavailable = "head" if server.clip else "zero_shot"
    with pytest.raises(Exception, match="not in the list of choices"):
        client.predict(example("cat-a.jpg"), source=unavailable, api_name="/classify")
    for mode in ("general", "face", "signature"):
        a, b = {"general": ("cat-a.jpg", "cat-b.jpg"), "face": ("face-a.jpg", "face-b.jpg"),
                "signature": ("signature-a.png", "signature-b.png")}[mode]
        *_, verdict, _, crops = client.predict(example(a), example(b), mode=mode, api_name="/compare")
        assert f"{mode} mode" in verdict and len(crops) == 2
    for reduce, words in (("best", "closest"), ("mean", "mean")):
        *_, explanation, _ = client.predict([example("cat-a.jpg"), example("coffee.jpg")], example("cat-b.jpg"),
                                            mode="general", reduce=reduce, api_name="/enrol_and_compare")
        assert words in explanation.lower(), reduce


def test_additions_are_the_sessions_own(server):
    from gradio_client.exceptions import AppError

    mine, other = client_of(server), client_of(server)
    message, _ = mine.predict([example("face-a.jpg")], "just mine", api_name="/add_to_gallery")
    assert "only you see them" in message
    _, _, hits = mine.predict(example("face-a.jpg"), labels=["just mine"], api_name="/search")
    assert hits[0]["yours"] is True and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    _, _, theirs = other.predict(example("face-a.jpg"), api_name="/search")
    assert all(hit["label"] != "just mine" and not hit["yours"] for hit in theirs)
    with pytest.raises(AppError, match="shared gallery is off"):
        other.predict([example("face-a.jpg")], "everyone", shared=True, token="guess", api_name="/add_to_gallery")
    with pytest.raises(ValueError, match="sync_gallery"):
        other.predict(api_name="/sync_gallery")


def test_shared_writes_need_the_setting_and_the_token(tmp_path):
    env = {"TWINSIGHT_SHARED_WRITES": "1", "TWINSIGHT_WRITE_TOKEN": "s3cret-token"}
    with start_app(tmp_path, "effnet-lite0", env=env) as server:
        from gradio_client.exceptions import AppError

        writer, reader = client_of(server), client_of(server)
        with pytest.raises(AppError, match="Wrong or missing write token"):
            writer.predict([example("cat-b.jpg")], "for all", shared=True, token="guess", api_name="/add_to_gallery")
        message, _ = writer.predict([example("cat-b.jpg")], "for all", shared=True, token="s3cret-token",
                                    api_name="/add_to_gallery")
        assert "to the shared gallery" in message
        _, _, hits = reader.predict(example("cat-b.jpg"), labels=["for all"], api_name="/search")
        assert hits[0]["label"] == "for all" and hits[0]["yours"] is False


def test_heic_phone_photo_through_the_api(server, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is in requirements.txt; install it")
    from gradio_client import handle_file
    from PIL import Image

    heic = tmp_path / "iphone.heic"
    pillow_heif.from_pillow(Image.open(EXAMPLES / "cat-a.jpg")).save(str(heic), quality=95)
    similarity, _, verdict, _, _ = client_of(server).predict(handle_file(str(heic)), example("cat-a.jpg"), api_name="/compare")
    assert "✔ Match" in verdict and similarity > 0.95
