"""The README's Python examples, run exactly as written (only the app's address and the example files differ):
the API blocks against the real app on the default offline model and on a tiny CLIP model, the library block in-process."""
from __future__ import annotations

import re
import shutil

import pytest

from app_server import ROOT
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
