"""`python -m indexer compare A B` and `indexer.compare_images`: one JSON "same?" answer; and positional search queries."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from indexer import build_index
from indexer.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
KEYS = ["verified", "distance", "threshold", "threshold_source", "similarity", "model", "mode", "time"]


def test_top_level_names():
    import indexer
    from indexer import Mode, Verifier, compare_images  # what DeepFace users reach for first

    assert {"Mode", "Verifier", "compare_images", "CompareResult"} <= set(indexer.__all__)
    assert Mode("face") is Mode.FACE and Verifier.compare and compare_images.__module__ == "indexer.compare"


def test_compare_prints_one_json_object_with_the_documented_keys(tiny_clip_spec, capsys):
    same = EXAMPLES / "cat-a.jpg"
    assert main(["compare", str(same), str(same), "--mode", "general", "--model", tiny_clip_spec]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert list(answer) == KEYS
    assert answer["verified"] is True and answer["distance"] == pytest.approx(0.0, abs=1e-4)
    assert answer["similarity"] == pytest.approx(1.0, abs=1e-4) and answer["mode"] == "general"
    assert answer["model"] == tiny_clip_spec and answer["time"] > 0 and answer["threshold_source"]


def test_compare_threshold_decides_the_verdict(tiny_clip_spec, capsys):
    a, b = EXAMPLES / "cat-a.jpg", EXAMPLES / "coffee.jpg"
    main(["compare", str(a), str(b), "--model", tiny_clip_spec])
    distance = json.loads(capsys.readouterr().out)["distance"]
    main(["compare", str(a), str(b), "--model", tiny_clip_spec, "--threshold", str(distance - 0.01)])
    below = json.loads(capsys.readouterr().out)
    main(["compare", str(a), str(b), "--model", tiny_clip_spec, "--threshold", str(distance + 0.01)])
    above = json.loads(capsys.readouterr().out)
    assert below["verified"] is False and above["verified"] is True
    assert below["threshold"] == pytest.approx(distance - 0.01) and "you" in below["threshold_source"].lower()


def test_compare_command_in_face_mode_as_a_process():
    """The real command line: face mode loads no embedding model, only dlib."""
    run = subprocess.run([sys.executable, "-m", "indexer", "compare", str(EXAMPLES / "face-a.jpg"), str(EXAMPLES / "face-b.jpg"),
                          "--mode", "face"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr
    [line] = run.stdout.strip().splitlines()
    answer = json.loads(line)
    assert list(answer) == KEYS and answer["mode"] == "face" and answer["threshold"] == 0.6
    assert answer["verified"] is (answer["distance"] <= 0.6) and "dlib" in answer["model"]


def test_compare_without_a_face_is_a_clear_error(capsys):
    code = main(["compare", str(EXAMPLES / "coffee.jpg"), str(EXAMPLES / "face-a.jpg"), "--mode", "face"])
    assert code == 2 and "No face found in image A" in capsys.readouterr().err


def test_positional_search_query_is_an_image_when_it_names_a_file(tiny_clip, gallery_folder, tmp_path, monkeypatch):
    index = build_index(gallery_folder, model=tiny_clip, out=tmp_path / "ix")
    path = sorted(gallery_folder.rglob("*.png"))[5]
    assert index.search(str(path), k=1)[0].id == 5  # a str naming a file: the image
    assert index.search(path, k=1)[0].id == 5  # a Path: the image
    monkeypatch.chdir(path.parent)
    assert index.search(path.name, k=1)[0].id == 5  # relative to the working directory
    with pytest.raises(ValueError, match=r"not an existing file.*text="):
        index.search("photo.jpg", k=1)  # not silently a search for the words "photo.jpg"
    assert len(index.search(text="photo.jpg", k=2)) == 2  # explicit text is text
