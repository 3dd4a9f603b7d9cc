"""Tab callbacks with a small injected model: fast, no browser."""
import gradio as gr
import pytest
from PIL import Image

from demo import classification, gallery, pairwise, runtime
from indexer import build_index, load_image
from tiny_models import make_gallery_images


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
    assert classification.available_sources() == [classification.Source.HEAD.value, classification.Source.GALLERY.value]
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


def test_zero_shot_labels_are_split_on_commas_and_new_lines_and_kept_once_in_order():
    assert classification.parse_labels("cat\ndog, cat ,, car\n") == ["cat", "dog", "car"]


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
    same, distance, verdict, explanation, crops = pairwise.compare(image_files["chelsea"], image_files["chelsea"], "general", None)
    assert same == pytest.approx(1.0, abs=1e-3) and distance == pytest.approx(0.0, abs=1e-3)
    assert "✔ Match" in verdict and len(crops) == 2
    default = runtime.verifier().threshold("general")
    assert default.source in explanation  # the page says where the threshold came from
    ab = pairwise.compare(image_files["chelsea"], image_files["rocket"], "general", None)
    ba = pairwise.compare(image_files["rocket"], image_files["chelsea"], "general", None)
    assert ab[0] == pytest.approx(ba[0], abs=1e-4) and ab[1] == pytest.approx(ba[1], abs=1e-4)
    assert ab[0] < same
    # A threshold just under the pair's distance flips the verdict, and the page says the user set it.
    _, _, verdict, explanation, _ = pairwise.compare(image_files["chelsea"], image_files["rocket"], "general", ab[1] - 0.01)
    assert "No match" in verdict and "set by you" in explanation


def test_pairwise_threshold_slider_shows_the_calibrated_default(use_model):
    use_model("effnet-lite0")
    for mode in ("general", "face", "signature"):
        slider = pairwise.threshold_slider(mode)
        default = runtime.verifier().threshold(mode)
        assert slider.value == pytest.approx(default.value, abs=1e-3)
        assert default.source in slider.info and slider.maximum >= default.value


def test_signature_mode_scores_enrolments_relative_to_the_references_and_others_by_the_closest():
    assert pairwise.default_reduce("signature") == "relative"
    assert pairwise.default_reduce("general") == pairwise.default_reduce("face") == "best"
    with pytest.raises(gr.Error, match="Unknown mode"):
        pairwise.default_reduce("handwriting")


def test_pairwise_face_mode_says_when_there_is_no_face(use_model, image_files):
    use_model("effnet-lite0")
    with pytest.raises(gr.Error, match="(?i)no face"):
        pairwise.compare(image_files["coffee"], image_files["astronaut"], "face", None)


def test_enrolment_compares_against_every_reference(use_model, image_files):
    use_model("effnet-lite0")
    refs = [image_files["chelsea"], image_files["coffee"]]
    best = pairwise.enrol_and_compare(refs, image_files["chelsea"], "general", "best", None)
    mean = pairwise.enrol_and_compare(refs, image_files["chelsea"], "general", "mean", None)
    assert best[1] == pytest.approx(0.0, abs=1e-3) and mean[1] > best[1]
    assert len(best[4]) == 3  # two references and the questioned image
    with pytest.raises(gr.Error, match="at least one reference"):
        pairwise.enrol_and_compare([], image_files["chelsea"])


def test_pairwise_needs_both_images(use_model, image_files):
    use_model("effnet-lite0")
    with pytest.raises(gr.Error, match="both"):
        pairwise.compare(image_files["chelsea"], None)


def test_pairwise_examples_exist_and_are_valid_rows():
    rows = runtime.pairwise_examples()
    assert len(rows) == 5
    assert {row[2] for row in rows} == {"general", "face", "signature"}


def test_status_shows_model_device_and_notice(use_model, monkeypatch):
    model = use_model("effnet-lite0")
    monkeypatch.setattr(model, "notice", "offline: test notice")
    status = runtime.status_markdown()
    assert "effnet-lite0" in status and "cpu" in status and "offline: test notice" in status


@pytest.fixture
def small_gallery(use_model, tiny_clip_spec, gallery_folder, tmp_path, monkeypatch):
    """A 12-image labelled gallery on the tiny model, injected as the app's shared index."""
    model = use_model(tiny_clip_spec)
    index = build_index(gallery_folder, model=model, out=tmp_path / "ix")
    runtime.use_gallery(index)
    yield index
    runtime.use_gallery(None)


def test_configured_ef_applies_to_the_shared_gallery(use_model, tiny_clip_spec, gallery_folder, tmp_path, monkeypatch):
    use_model(tiny_clip_spec)
    monkeypatch.setenv("TWINSIGHT_INDEX_DIR", str(tmp_path / "indexes"))
    monkeypatch.setattr(runtime.settings, "gallery", str(gallery_folder))
    monkeypatch.setattr(runtime.settings, "ef", None)
    runtime.use_gallery(None)
    try:
        runtime.configure(ef=333)
        assert runtime.gallery().ef == 333 and len(runtime.gallery()) == 12
        assert runtime.gallery().search(vector=runtime.gallery().vectors([4])[0], k=1)[0].id == 4
    finally:
        runtime.use_gallery(None)


def test_gallery_search_by_image_text_and_click(small_gallery, gallery_folder):
    query = sorted(gallery_folder.rglob("*.png"))[3]
    items, summary, shown = gallery.search(str(query), "", 5)
    assert len(items) == len(shown) == 5
    top = small_gallery.get(shown[0]["id"])
    assert top.source == str(query.resolve())  # the image itself is its own nearest neighbour
    assert items[0][1].startswith(top.label) and "1.000" in items[0][1]
    _, _, by_text = gallery.search(None, "a cat", 3)
    assert len(by_text) == 3
    clicked = gallery.select_result(shown, 4, None, None, gr.SelectData(None, {"index": 2, "value": None}))
    assert clicked[2][0]["id"] == shown[2]["id"] and len(clicked[2]) == 4
    assert set(shown[0]) == {"id", "score", "label", "yours"}  # no server paths in what users receive


def test_gallery_label_filter(small_gallery, gallery_folder):
    wanted = small_gallery.labels()[0]
    _, _, shown = gallery.search(str(next(gallery_folder.rglob("*.png"))), "", 10, [wanted])
    assert shown and all(small_gallery.get(hit["id"]).label == wanted for hit in shown)


def test_gallery_add_is_searchable_at_once_and_kept_on_disk(small_gallery, tmp_path, photos):
    path = tmp_path / "new.png"
    Image.fromarray(photos["rocket"]).save(path)
    from indexer import open_index
    from indexer.index import read_meta
    from indexer.index.journal import JOURNAL_FILE

    before, saved_count = len(small_gallery), read_meta(small_gallery.path)["count"]
    message, dropdown = gallery.add_images([str(path)], "rockets")
    assert len(small_gallery) == before + 1 and "Added 1" in message
    assert ("rockets", "rockets") in dropdown.choices
    _, _, shown = gallery.search(str(path), "", 1)
    assert small_gallery.get(shown[0]["id"]).label == "rockets"
    # Committed to the journal, not by rewriting the gallery: the full save is as it was.
    assert (small_gallery.path / JOURNAL_FILE).is_file() and read_meta(small_gallery.path)["count"] == saved_count
    reopened = open_index(small_gallery.path, small_gallery.embedder)
    [added] = [i for i in reopened.ids if reopened.get(i).label == "rockets"]
    assert reopened.image(added).size == Image.open(path).size  # the stored image is on disk too


def test_gallery_bad_inputs_are_friendly(small_gallery, tmp_path):
    with pytest.raises(gr.Error, match="Drop an image"):
        gallery.search(None, "  ", 3)
    with pytest.raises(gr.Error) as refused:
        gallery.add_images([], "")
    assert refused.value.message.startswith("Choose one or more image files to add")
    bad, worse = tmp_path / "bad.png", tmp_path / "worse.jpg"
    bad.write_text("nope")
    worse.write_bytes(b"\xff\xd8 not a jpeg")
    reasons = []
    for path in (bad, worse):
        with pytest.raises(ValueError) as unreadable:
            load_image(str(path))
        reasons.append(str(unreadable.value))
    with pytest.raises(gr.Error) as refused:  # each file's own reason, in order
        gallery.add_images([str(bad), str(worse)], "")
    assert refused.value.message == "None of the files could be read: " + " ".join(reasons)
    with pytest.raises(gr.Error, match="not in the gallery"):
        gallery.similar(10_000, 3)


def test_gallery_votes_classify_with_any_model(small_gallery, gallery_folder):
    query = sorted(gallery_folder.rglob("*.png"))[0]
    labels, answered = classification.classify(str(query), classification.Source.GALLERY.value, "", "", 10)
    assert small_gallery.get(gallery.search(str(query), "", 1)[2][0]["id"]).label in labels
    assert set(labels) <= set(small_gallery.labels())
    assert sum(labels.values()) == pytest.approx(1.0, abs=1e-6)  # all labels shown: a full distribution
    assert "Gallery votes" in answered


def test_pairwise_several_faces_shows_the_faces_or_compares_the_largest(use_model, image_files, tmp_path, photos):
    from test_face import two_faces

    use_model("effnet-lite0")
    group = tmp_path / "two.png"
    two_faces(Image.fromarray(photos["astronaut"])).save(group)
    similarity, distance, verdict, explanation, crops = pairwise.compare(str(group), image_files["astronaut"], "face", None)
    assert similarity is None and "No verdict" in verdict and "2 faces" in explanation
    assert len(crops) == 2  # the faces found, so the user sees what to crop
    similarity, distance, verdict, explanation, crops = pairwise.compare(str(group), image_files["astronaut"], "face", None, True)
    assert "✔ Match" in verdict and "compared the largest" in explanation and len(crops) == 2


def test_gallery_sync_embeds_new_folder_files_with_progress(small_gallery, gallery_folder, monkeypatch):
    monkeypatch.setattr(runtime.settings, "shared_writes", True)
    monkeypatch.setattr(runtime.settings, "write_token", "s3cret")
    make_gallery_images(1, seed=77)[0].save(gallery_folder / "Alphabet_0" / "character00" / "new.png")
    before = len(small_gallery)
    seen = []
    with pytest.raises(gr.Error, match="Wrong or missing write token"):
        gallery.sync_gallery("guess", progress=lambda *a, **k: None)
    assert len(small_gallery) == before
    message = gallery.sync_gallery("s3cret", progress=lambda value, **kwargs: seen.append(value))
    assert len(small_gallery) == before + 1 and "1 new image" in message
    assert seen and seen[-1][0] == seen[-1][1]  # progress reached done == total
    assert "1 new image" not in gallery.sync_gallery("s3cret", progress=lambda *a, **k: None)  # nothing new the second time


def test_gallery_results_are_decoded_once_per_item(small_gallery, gallery_folder, monkeypatch):
    calls = []
    original = small_gallery.image
    monkeypatch.setattr(small_gallery, "image", lambda item_id: (calls.append(item_id), original(item_id))[1])
    query = str(sorted(gallery_folder.rglob("*.png"))[0])
    first, _, _ = gallery.search(query, "", 4)
    second, _, _ = gallery.search(query, "", 4)
    assert [path for path, _ in first] == [path for path, _ in second]
    assert len(calls) == len(set(calls)) <= 4  # the second search reused the display files
    assert max(Image.open(first[0][0]).size) <= gallery.THUMBNAIL_SIDE


def test_thumbnail_cache_is_bounded(small_gallery, gallery_folder, monkeypatch):
    from indexer.lru import LruCache

    monkeypatch.setattr(gallery, "_thumbnails", LruCache(2))
    items, _, _ = gallery.search(str(sorted(gallery_folder.rglob("*.png"))[0]), "", 5)
    assert len(items) == 5 and len(gallery._thumbnails) == 2  # five shown, the two most recent kept


def test_browse_shows_gallery_items_with_their_labels(small_gallery):
    items, summary, data = gallery.browse(None, 5)
    assert len(items) == len(data) == len({d["id"] for d in data}) == 5 and "at random" in summary
    assert all(small_gallery.get(d["id"]).label == caption for d, (_, caption) in zip(data, items))
    wanted = small_gallery.labels()[1]
    items, summary, data = gallery.browse(wanted, 32)
    assert data and {d["label"] for d in data} == {wanted} and len(data) == sum(
        small_gallery.get(i).label == wanted for i in small_gallery.ids)


def test_session_additions_are_searched_with_the_shared_gallery_and_never_written_to_it(small_gallery, image_files):
    before = len(small_gallery)
    message, labels, mine = gallery.add_to_gallery([image_files["rocket"]], "my rocket", None)
    assert len(small_gallery) == before and len(mine) == 1 and "only you see them" in message
    assert ("my rocket", "my rocket") in labels.choices
    _, _, hits = gallery.search(image_files["rocket"], "", 3, None, mine)
    assert hits[0] == {"id": 0, "score": pytest.approx(1.0, abs=1e-3), "label": "my rocket", "yours": True}
    assert not any(hit["yours"] for hit in gallery.search(image_files["rocket"], "", 3)[2])  # another session
    clicked = gallery.select_result(hits, 3, None, mine, gr.SelectData(None, {"index": 0, "value": None}))
    assert clicked[2][0]["yours"] is True
    with pytest.raises(gr.Error, match="shared gallery is off"):
        gallery.add_to_gallery([image_files["rocket"]], "everyone", mine, True, "any")
    assert len(small_gallery) == before


def test_session_additions_are_bounded(small_gallery, image_files, monkeypatch):
    from demo import session

    monkeypatch.setattr(session, "MAX_SESSION_ITEMS", 2)
    monkeypatch.setattr(gallery, "MAX_SESSION_ITEMS", 2)
    _, _, mine = gallery.add_to_gallery([image_files["rocket"], image_files["coffee"]], "", None)
    with pytest.raises(gr.Error, match="limited to 2 images per session"):
        gallery.add_to_gallery([image_files["chelsea"]], "", mine)


def test_callbacks_give_their_decoded_pixels_back(small_gallery, gallery_folder, image_files, tiny_clip_spec):
    import gc

    from indexer import images

    gc.collect()
    before = images.DECODE_BUDGET.used_bytes
    query = str(sorted(gallery_folder.rglob("*.png"))[3])
    gallery.search(query, "", 5)
    pairwise.compare(image_files["chelsea"], image_files["rocket"], "general", None)
    pairwise.enrol_and_compare([image_files["chelsea"], image_files["coffee"]], image_files["rocket"], "general")
    classification.classify(image_files["chelsea"], classification.Source.ZERO_SHOT.value, "cat, dog", "a {}", 2)
    gallery.add_images([image_files["astronaut"]], "added")
    gc.collect()
    # Anything still held would shrink the budget for every later request, for good.
    assert images.DECODE_BUDGET.used_bytes == before


def test_adding_more_photos_than_the_decode_budget_holds_does_not_wait_for_itself(small_gallery, image_files, monkeypatch):
    import time

    from indexer import images

    budget = images.DecodeBudget(limit_bytes=1, wait_seconds=20.0)  # smaller than any one of the photos
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    before = len(small_gallery)
    started = time.monotonic()
    message, _ = gallery.add_images(list(image_files.values()), "many")
    assert time.monotonic() - started < 10 and "Skipped" not in message
    assert len(small_gallery) == before + len(image_files)


def test_warm_up_starts_the_face_model_beside_the_embedding_model(use_model, tiny_clip_spec, small_gallery,
                                                                  monkeypatch, caplog):
    import threading

    embedding, face = threading.Event(), threading.Event()
    shared = runtime.embedder

    def embedder_waiting_for_the_face_model():
        embedding.set()
        assert face.wait(10), "the face model did not start while the embedding model loaded"
        return shared()

    def face_model_after_the_embedder_began():
        assert embedding.wait(10)
        face.set()
        raise FileNotFoundError("dlib face models are missing: pip install face-recognition-models dlib-bin")

    monkeypatch.setattr(runtime, "embedder", embedder_waiting_for_the_face_model)
    monkeypatch.setattr(runtime, "load_face_model", face_model_after_the_embedder_began)
    with caplog.at_level("WARNING"):
        runtime.warm_up()  # a missing face model leaves the rest of the app up
    assert face.is_set() and "face mode is unavailable: dlib face models are missing" in caplog.text
