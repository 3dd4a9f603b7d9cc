"""The README's Python examples, run exactly as written (only the app's address and the example files differ):
the API blocks against the real app on the default offline model and on a tiny CLIP model, the library block in-process;
and the Python blocks of docs/INDEX.md and docs/VERIFICATION.md."""
from __future__ import annotations

import re
import shutil

import pytest

from app_server import ROOT
from indexer import open_index
from test_api import server  # noqa: F401 the same two apps: default offline model, tiny CLIP

pytestmark = pytest.mark.e2e
README = ROOT / "README.md"
EXAMPLES = ROOT / "assets" / "examples"
# The file names the README uses -> the project's own example files that stand in for them.
FILES = {"cat.jpg": "cat-a.jpg", "a.jpg": "face-a.jpg", "b.jpg": "face-b.jpg", "b.png": "signature-a.png",
         "ref1.png": "signature-a.png", "ref2.png": "signature-b.png", "questioned.png": "signature-other.png",
         "query.jpg": "coffee.jpg", "new.jpg": "cat-b.jpg"}
DEFAULT_URL = "http://127.0.0.1:7860"


def readme_blocks(marker: str) -> list[str]:
    """The python code blocks right after `<!-- MARKER -->` in the README."""
    return re.findall(rf"<!-- {re.escape(marker)} -->\n```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture
def example_files(tmp_path, monkeypatch):
    for name, source in FILES.items():
        shutil.copy(EXAMPLES / source, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_block(code: str, url: str | None = None) -> dict:
    if url:
        assert DEFAULT_URL in code
        code = code.replace(DEFAULT_URL, url)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 the README's own code
    return namespace


def test_readme_has_the_blocks_this_test_runs():
    assert len(readme_blocks("api-example: any model")) == 1 and len(readme_blocks("api-example: CLIP models")) == 1
    assert len(readme_blocks("library-example")) == 1


def test_readme_api_examples_run_against_the_app(server, example_files):  # noqa: F811
    names = run_block(readme_blocks("api-example: any model")[0], server.url)
    assert names["hits"][0]["yours"] is True and names["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert "Added 1" in names["message"] and len(names["items"]) == 8
    if server.clip:
        names = run_block(readme_blocks("api-example: CLIP models")[0], server.url)
        assert {c["label"] for c in names["labels"]["confidences"]} == {"cat", "dog", "car"} and len(names["hits"]) == 8


def test_readme_library_example_runs(example_files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # "auto" falls back to the offline model, as on a machine without the hub
    names = run_block(readme_blocks("library-example")[0])
    assert names["vectors"].shape[0] == 2 and names["model"].name == "effnet-lite0"


def test_docs_index_example_runs(tmp_path, monkeypatch, tiny_clip_spec):
    """docs/INDEX.md's Python block on a folder of the project's example photos, with the tiny CLIP model standing
    in for "auto" (its text search needs a text tower)."""
    [code] = re.findall(r"<!-- docs-example -->\n```python\n(.*?)```", (ROOT / "docs" / "INDEX.md").read_text(), flags=re.S)
    for label, names in {"cats": ["cat-a.jpg", "cat-b.jpg"], "other": ["coffee.jpg", "face-a.jpg"]}.items():
        (tmp_path / "photos" / label).mkdir(parents=True)
        for name in names:
            shutil.copy(EXAMPLES / name, tmp_path / "photos" / label / name)
    shutil.copy(EXAMPLES / "cat-b.jpg", tmp_path / "photo.jpg")
    shutil.copy(EXAMPLES / "face-b.jpg", tmp_path / "new.jpg")
    monkeypatch.chdir(tmp_path)
    assert code.count('model="auto"') == 1
    names = run_block(code.replace('model="auto"', f'model="{tiny_clip_spec}"'))
    index = names["index"]
    first, second = names["ids"]
    assert len(index) == 5 and first not in index and second in index  # 4 photos, 2 added, 1 of them deleted
    assert open_index(tmp_path / "indexes" / "photos").ids == index.ids  # saved as it is
    assert names["image"].size[0] > 0 and len(names["hits"]) == 5 and names["hits"][0].score == pytest.approx(1.0, abs=1e-4)


def test_docs_verification_example_runs(monkeypatch, capsys):
    """docs/VERIFICATION.md's Python block as written, from the repository root (its images are the examples)."""
    [code] = re.findall(r"<!-- docs-example -->\n```python\n(.*?)```", (ROOT / "docs" / "VERIFICATION.md").read_text(),
                        flags=re.S)
    monkeypatch.chdir(ROOT)
    names = run_block(code)
    assert names["r"].mode.value == "signature" and len(names["r"].reference_distances) == 2
    assert "calibration run on your 2 labelled pairs" in names["verifier"].threshold("general").source
    assert capsys.readouterr().out.startswith("True ")  # the two face photos are the same person
