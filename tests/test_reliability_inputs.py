"""Every case of the bad-input corpus (tests/bad_inputs.py) through every tab callback, with a small model.

Each call either gives a correct result or raises gr.Error with a message naming the problem; never another
exception type, never a traceback in the message. Then the app still answers a normal request, and every
acknowledged gallery addition is on disk. Plus the library-level bad inputs: a dataset without an image
column, a damaged index directory, a head file that is not safetensors.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from bad_inputs import make_corpus
from demo import classification, gallery, pairwise, runtime
from indexer import GalleryIndex, build_index, open_index
from indexer.index import IndexFormatError

ZERO_SHOT, VOTES = classification.Source.ZERO_SHOT.value, classification.Source.GALLERY.value


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def app_state(monkeypatch, tiny_clip_spec, gallery_folder, tmp_path):
    """The app's shared state on the tiny CLIP model and a 12-image gallery saved in tmp_path."""
    monkeypatch.setattr(runtime.settings, "model", tiny_clip_spec)
    index = build_index(gallery_folder, model=runtime.embedder(), out=tmp_path / "ix")
    runtime.use_gallery(index)
    yield index
    runtime.use_gallery(None)


def _call(fn, *args):
    """('ok', result) or ('error', message); any exception other than gr.Error fails the test."""
    try:
        return "ok", fn(*args)
    except gr.Error as exc:
        message = str(exc.message)
        assert message.strip() and "Traceback" not in message and 'File "' not in message, message
        return "error", message


def _expect_refusal(case, outcome):
    kind, value = outcome
    assert kind == "error", f"{case.name}: expected a refusal, got a result"
    assert re.search(case.message, value), f"{case.name}: message does not name the problem: {value}"


def test_corpus_through_every_callback(app_state, corpus, tmp_path):
    control = next(c for c in corpus if c.name == "control-jpeg").path
    calls = {"ok": 0, "error": 0}
    for case in corpus:
        path = str(case.path)
        outcomes = {
            "classify zero-shot": _call(classification.classify, path, ZERO_SHOT, "cat, dog, car", "a photo of a {}.", 3),
            "classify votes": _call(classification.classify, path, VOTES, "", "", 3),
            "compare general": _call(pairwise.compare, path, path, "general", 0.5),
            "compare signature": _call(pairwise.compare, path, control, "signature", 0.5),
            "compare face": _call(pairwise.compare, path, control, "face", 0.6),
            "enrol general": _call(pairwise.enrol_and_compare, [control, path], path, "general", "best", 0.5),
            "enrol signature": _call(pairwise.enrol_and_compare, [path], control, "signature", "mean", 0.5),
            "search": _call(gallery.search, path, "", 4),
            "add": _call(gallery.add_images, [path], f"case {case.name}"),
        }
        for outcome in outcomes.values():
            calls[outcome[0]] += 1
        if not case.ok:  # every callback, face mode included, names the file's problem
            for outcome in outcomes.values():
                _expect_refusal(case, outcome)
            continue
        # Readable cases give correct results.
        scores, answered = outcomes["classify zero-shot"][1]
        assert set(scores) <= {"cat", "dog", "car"} and len(scores) == 3 and "Zero-shot" in answered, case.name
        assert outcomes["classify votes"][0] == "ok", (case.name, outcomes["classify votes"])
        similarity, distance, verdict, _, crops = outcomes["compare general"][1]
        assert similarity == pytest.approx(1.0, abs=1e-3) and "✔ Match" in verdict, case.name  # same file, same vector
        if case.size and min(case.size) >= 8:  # the crop shown is the upright image (EXIF applied), downscaled
            width, height = Image.open(crops[0][0]).size
            assert (width >= height) == (case.size[0] >= case.size[1]), (case.name, crops[0][0].size)
        assert outcomes["enrol general"][1][1] == pytest.approx(0.0, abs=1e-3), case.name  # the best reference is itself
        # Face mode: these are not faces; the answer is a clear "no face", not a crash.
        assert outcomes["compare face"][0] == "error" and "face" in outcomes["compare face"][1].lower(), case.name
        # Signature mode: a result, or a clear "no ink" message for flat images.
        for what in ("compare signature", "enrol signature"):
            kind, value = outcomes[what]
            assert kind == "ok" or re.search(r"(?i)ink|flat colour", value), (case.name, what, value)
        assert len(outcomes["search"][1][2]) == 4, case.name
        kind, (message, _) = outcomes["add"]
        assert kind == "ok" and message.startswith("Added 1"), (case.name, outcomes["add"])
        # The added image is its own nearest neighbour.
        _, _, hits = gallery.search(path, "", 1)
        assert app_state.get(hits[0]["id"]).label == f"case {case.name}" and hits[0]["score"] > 0.999, case.name

    readable = [c for c in corpus if c.ok]
    assert calls["ok"] + calls["error"] == 9 * len(corpus)
    # Every acknowledged addition is on disk: reload the saved gallery.
    reloaded = open_index(app_state.path, app_state.embedder)
    assert sorted(l for l in reloaded.labels() if l.startswith("case ")) == sorted(f"case {c.name}" for c in readable)
    assert len(reloaded) == 12 + len(readable)
    # The app still answers a normal request after the corpus.
    normal = Image.fromarray(np.asarray(Image.open(control)))
    normal.save(tmp_path / "normal.png")
    similarity, *_ = pairwise.compare(str(tmp_path / "normal.png"), str(tmp_path / "normal.png"), "general", None)
    assert similarity == pytest.approx(1.0, abs=1e-3)
    _, _, hits = gallery.search(None, "a cat", 3)
    assert len(hits) == 3


def test_mixed_batch_adds_the_good_and_names_the_bad(app_state, corpus):
    good = [str(c.path) for c in corpus if c.ok][:3]
    bad = [c for c in corpus if not c.ok][:4]
    before = len(app_state)
    message, _ = gallery.add_images(good + [str(c.path) for c in bad], "mixed")
    assert message.startswith("Added 3") and "Skipped:" in message
    for case in bad:
        assert re.search(case.message, message), (case.name, message)
    assert len(open_index(app_state.path, app_state.embedder)) == before + 3


@pytest.fixture
def photo(corpus) -> str:
    """A readable image, so that a bound is the only thing that can refuse a call."""
    return str(next(c for c in corpus if c.name == "control-jpeg").path)


def _labels(n: int) -> str:
    return ", ".join(f"l{i}" for i in range(n))


# (call, the limit's own message). Each call is valid but for the one bound it breaks, on a readable image, so
# removing that bound makes the call succeed (or fail with another message) and the test fail.
BOUNDED = {
    "no-image": (lambda p: classification.classify(None, ZERO_SHOT, "cat", "a {}", 3), r"No image given"),
    "too-many-label-chars": (lambda p: classification.classify(p, ZERO_SHOT, "cat," * 600, "a {}", 3),
                             r"label list is over 2000 characters"),
    "too-many-labels": (lambda p: classification.classify(p, ZERO_SHOT, _labels(101), "a {}", 3),
                        r"101 labels given; use at most 100"),
    "long-template": (lambda p: classification.classify(p, ZERO_SHOT, "cat", "a photo of a {}" + "." * 190, 3),
                      r"prompt template is over 200 characters"),
    "absurd-top-k": (lambda p: classification.classify(p, ZERO_SHOT, "cat", "a {}", 10_000), r"Top-k must be from 1 to 10"),
    "zero-top-k": (lambda p: classification.classify(p, ZERO_SHOT, "cat", "a {}", 0), r"Top-k must be from 1 to 10"),
    "long-query": (lambda p: gallery.search(None, "q" * 501, 3), r"text query is over 500 characters"),
    "too-many-files": (lambda p: gallery.add_images([p] * 51, ""), r"51 files chosen; add at most 50"),
    "long-label": (lambda p: gallery.add_images([p], "l" * 101), r"label is over 100 characters"),
    "too-many-references": (lambda p: pairwise.enrol_and_compare([p] * 21, p, "general"),
                            r"21 references given; use at most 20"),
    "infinite-item-id": (lambda p: gallery.similar(float("inf"), 3), r"gallery item id must be a whole number from 0 "
                         r"to \d+; got 'inf'\."),
    "long-non-number-k": (lambda p: gallery.search(p, "", "k" * 100), r"number of results must be a whole number "
                          r"from 1 to 32; got 'k{40}'\."),  # what was given, cut to 40 characters
    "huge-item-id": (lambda p: gallery.similar(2**70, 3), r"gallery item id must be from 0 to \d+; got a huge number\."),
    "negative-item-id": (lambda p: gallery.similar(-1, 3), r"gallery item id must be from 0 to \d+; got -1\."),
    "absurd-k": (lambda p: gallery.search(p, "", 10_000), r"number of results must be from 1 to 32; got 10000\."),
    "trillion-k": (lambda p: gallery.search(p, "", 10**12), r"must be from 1 to 32; got a huge number\."),  # not echoed
    "zero-k": (lambda p: gallery.similar(0, 0), r"number of results must be from 1 to 32"),
    "too-many-filter-labels": (lambda p: gallery.search(p, "", 3, [f"label {i}" for i in range(101)]),
                               r"Filter on at most 100 labels"),
    "long-filter-label": (lambda p: gallery.search(p, "", 3, ["f" * 101]), r"Filter on at most 100 labels of at most 100"),
}


@pytest.mark.parametrize("case", list(BOUNDED))
def test_text_and_count_inputs_are_bounded(app_state, photo, case):
    """API callers bypass the page's max_length: the callbacks bound every text and count themselves."""
    call, message = BOUNDED[case]
    before = len(app_state)
    with pytest.raises(gr.Error) as raised:
        call(photo)
    assert re.search(message, str(raised.value.message)), raised.value.message
    assert "Traceback" not in str(raised.value.message)
    assert len(app_state) == before  # a refused addition adds nothing


def test_inputs_at_their_limits_are_accepted(app_state, photo):
    """Each bound is inclusive: the largest allowed value gives a result, not a refusal."""
    scores, _ = classification.classify(photo, ZERO_SHOT, _labels(100), "a photo of a {}" + "." * 185, 10)
    assert len(scores) == 10
    assert len(classification.classify(photo, ZERO_SHOT, "cat," * 499 + "cats", "a {}", 1)[0]) == 1  # 2,000 chars
    assert len(gallery.search(None, "q" * 500, 32)[2]) == 12  # k above the gallery's size: all of it
    assert len(gallery.search(photo, "", 1, [f"l{i}" for i in range(99)] + ["f" * 100])[2]) == 0  # no such labels
    message, _ = gallery.add_images([photo] * 50, "l" * 100)
    assert message.startswith("Added 50") and len(app_state) == 62
    result = pairwise.enrol_and_compare([photo] * 20, photo, "general")
    assert result[1] == pytest.approx(0.0, abs=1e-3)
    assert len(gallery.similar(61, 1)[1]) == 1  # (summary, hits)


def test_shapes_only_api_callers_send_are_read_as_meant(app_state, photo):
    """The page sends a list of filter labels and a label box that may be blank; an API caller may send one
    label as a string (a filter on that label) and an empty or blank label (the images are added unlabelled)."""
    label = app_state.labels()[0]
    _, _, shown = gallery.search(photo, "", 32, label)
    assert sorted(hit["id"] for hit in shown) == sorted(i for i in app_state.ids if app_state.get(i).label == label)
    for blank in ("", "   "):
        message, _ = gallery.add_images([photo], blank)
        assert "unlabelled" in message and app_state.get(max(app_state.ids)).label is None


# -- library-level bad inputs -------------------------------------------------------------------------------
def test_dataset_without_an_image_column_is_a_clear_error(tmp_path, tiny_clip):
    import datasets

    from indexer.sources import SourceError

    folder = tmp_path / "no-images"
    datasets.Dataset.from_dict({"text": ["a", "b"], "score": [1.0, 2.0]}).save_to_disk(str(folder))
    with pytest.raises(SourceError, match=r"No image column found.*columns are \['text', 'score'\].*--image-column"):
        build_index(folder, model=tiny_clip, out=tmp_path / "ix")
    assert not (tmp_path / "ix").exists()


@pytest.fixture
def saved_index(tmp_path):
    """20 vectors and one image stored inside the index (images/), saved. No model: opening checks the files only
    (and the mutation run of the index target runs these tests against every mutant)."""
    index = GalleryIndex(32, "open_clip:tiny-test")
    vectors = np.random.default_rng(0).normal(size=(21, 32)).astype(np.float32)
    index.add_vectors(vectors[:20], labels=["a"] * 20)
    index.add_vectors(vectors[20:], _images=[Image.new("RGB", (8, 8), (9, 9, 9))])
    return index.save(tmp_path / "ix")


@pytest.mark.parametrize("damage, message", [
    ("delete:vectors.npy", r"vectors\.npy is missing or damaged.*rebuild the index"),
    ("delete:index.hnsw", r"index\.hnsw is missing or damaged.*rebuild the index"),
    ("delete:metadata.parquet", r"metadata\.parquet is missing or damaged.*rebuild"),
    ("delete:meta.json", r"not a Twinsight index \(no meta\.json\).*python -m indexer build"),
    ("corrupt:vectors.npy", r"vectors\.npy is missing or damaged"),
    ("corrupt:index.hnsw", r"index\.hnsw is missing or damaged"),
    ("corrupt:images", r"images/.*is missing or damaged"),
    ("corrupt:meta.json", r"meta\.json is not valid JSON.*rebuild"),
    ("truncate:metadata.parquet", r"metadata\.parquet is missing or damaged"),
    ("format:meta.json", r"format 'something-else'.*upgrade Twinsight or rebuild"),
], ids=lambda value: value if ":" in str(value) else "")
def test_damaged_index_directory_is_a_clear_index_format_error(saved_index, damage, message):
    action, name = damage.split(":")
    target = next((saved_index / "images").iterdir()) if name == "images" else saved_index / name
    if action == "delete":
        target.unlink()
    elif action == "corrupt":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data) if name != "meta.json" else data[: len(data) // 2])
    elif action == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    else:
        meta = json.loads(target.read_text())
        meta["format"] = "something-else"
        target.write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match=message):
        open_index(saved_index, load_model=False)


def test_damaged_index_without_checksum_verification_is_still_a_clear_error(saved_index):
    """verify=False skips the checksums; a damaged file must still be an IndexFormatError, not a crash."""
    (saved_index / "vectors.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(IndexFormatError, match=r"vectors\.npy is missing or damaged \(ValueError: .+\); rebuild the "
                                               rf"index with `python -m indexer build \.\.\. --out {saved_index}`"):
        GalleryIndex.load(saved_index, verify=False)


def test_head_file_that_is_not_safetensors_is_refused_without_unpickling(tmp_path):
    import pickle

    import torch

    from indexer.siamese import load_head
    from indexer.siamese.cards import CARD_FILE
    from indexer.siamese.head import CARD_FORMAT, WEIGHTS_FILE

    folder = tmp_path / "head"
    folder.mkdir()
    card = {"format": CARD_FORMAT, "backbone": "effnet-lite0", "architecture": {"in_dim": 4, "hidden_dim": 4, "out_dim": 2}}
    (folder / CARD_FILE).write_text(json.dumps(card))
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (marker.write_text, ("code ran",))

    for payload in (pickle.dumps(Exploit()), b"", b"not safetensors at all", b"\xff" * 8 + b"{}"):
        (folder / WEIGHTS_FILE).write_bytes(payload)
        with pytest.raises(ValueError, match=r"head\.safetensors is not a valid safetensors file.*retrain or re-download"):
            load_head(folder)
    torch.save({"net.0.weight": torch.zeros(4, 4)}, folder / WEIGHTS_FILE)  # a torch pickle under the right name
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_head(folder)
    assert not marker.exists()
    (folder / CARD_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"card\.json is not valid JSON"):
        load_head(folder)


def test_image_inputs_pass_uploads_to_load_image_untouched(corpus):
    """gr.Image would decode an upload before the callback (a bare "Error" for unreadable files); image_input
    passes the uploaded path on, and the page still draws it as an image input with its props."""
    from gradio.data_classes import ImageData

    component = runtime.image_input(label="Image A", sources=["upload"])
    for case in corpus[:-1]:  # the missing file is never uploaded
        assert component.preprocess(ImageData(path=str(case.path), orig_name=case.path.name)) == str(case.path)
    assert component.preprocess(None) is None
    config = component.get_config()
    assert component.get_block_name() == "image" and config["label"] == "Image A" and config["sources"] == ["upload"]
    assert not list(Path(runtime.__file__).parent.glob("*.pyi"))  # no stub files written into the source tree
