"""Static and runtime security checks: nothing a user can supply is unpickled or run as code; Gradio serves only
what it must; dependencies are pinned; the gallery only opens images that belong to the index."""
from __future__ import annotations

import ast
import os
import re
import tempfile

import numpy as np
import pytest
from PIL import Image

from app_server import ROOT
from indexer.errors import ConfigError

# The shipped code: the app, its UI, the library, benchmarks and asset scripts. tests/ is left out on purpose:
# tests craft hostile pickles to prove they are refused.
SHIPPED = sorted(p for p in ROOT.rglob("*.py")
                 if not {"tests", ".venv", "venv", "test-artifacts", ".git"} & set(p.relative_to(ROOT).parts))
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "<expression>"
    return "<absent>"


def _callee(call: ast.Call) -> str:
    return ast.unparse(call.func)


def unsafe_calls(source: str) -> list[str]:
    """Every construct that could unpickle or run untrusted data, as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            for name in names:
                if name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{node.lineno}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        callee = _callee(node)
        if callee.endswith("torch.load"):
            if _keyword(node, "weights_only") is not True:
                found.append(f"{node.lineno}: torch.load without weights_only=True")
        if callee in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
            found.append(f"{node.lineno}: np.load without allow_pickle=False")
        if _keyword(node, "trust_remote_code") is True:
            found.append(f"{node.lineno}: trust_remote_code=True")
        if callee in ("eval", "exec", "compile", "__import__"):
            found.append(f"{node.lineno}: {callee}()")
        if callee.endswith("yaml.load") and "SafeLoader" not in ast.unparse(node):
            found.append(f"{node.lineno}: yaml.load without SafeLoader")
        if _keyword(node, "shell") is True:
            found.append(f"{node.lineno}: subprocess with shell=True")
    return found


def test_the_checker_catches_what_it_looks_for():
    bad = """
import pickle
from joblib import load
torch.load(path)
torch.load(path, weights_only=False)
np.load(path)
np.load(path, allow_pickle=True)
AutoModel.from_pretrained(x, trust_remote_code=True)
eval(text)
subprocess.run(cmd, shell=True)
"""
    assert len(unsafe_calls(bad)) == 9
    good = "torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p, allow_pickle=False)\nf(trust_remote_code=trust)\n"
    assert unsafe_calls(good) == []


def test_no_pickle_unsafe_loads_or_remote_code_in_shipped_code():
    assert len(SHIPPED) >= 30, SHIPPED  # the scan really sees the code base
    problems = {str(path.relative_to(ROOT)): unsafe_calls(path.read_text()) for path in SHIPPED}
    assert {path: found for path, found in problems.items() if found} == {}


def test_remote_code_is_off_unless_explicitly_enabled(monkeypatch):
    from indexer.models import hf_backend, registry

    seen = []

    class Recorder:
        def __init__(self, spec, device, dtype, trust_remote_code=False):
            seen.append(trust_remote_code)

    monkeypatch.setattr(hf_backend, "HFEmbedder", Recorder)
    monkeypatch.delenv("TWINSIGHT_TRUST_REMOTE_CODE", raising=False)
    registry.create_embedder("hf:org/model", device="cpu")
    monkeypatch.setenv("TWINSIGHT_TRUST_REMOTE_CODE", "0")
    registry.create_embedder("hf:org/model", device="cpu")
    monkeypatch.setenv("TWINSIGHT_TRUST_REMOTE_CODE", "1")
    registry.create_embedder("hf:org/model", device="cpu")
    assert seen == [False, False, True]
    # A value that is neither on nor off is refused, never guessed either way.
    monkeypatch.setenv("TWINSIGHT_TRUST_REMOTE_CODE", "sure")
    with pytest.raises(ConfigError, match="TWINSIGHT_TRUST_REMOTE_CODE='sure' is not valid"):
        registry.create_embedder("hf:org/model", device="cpu")
    assert len(seen) == 3


def test_gradio_serves_no_extra_paths():
    """app.py launches without allowed_paths, and the one static path is the app's own output directory: private
    (this user's own real 0700 directory, so no other local user can plant a link or files there), holding only
    the images the app wrote to show. Gradio serves its uploads and cache, and that."""
    tree = ast.parse((ROOT / "app.py").read_text())
    launches = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and _callee(node).endswith(".launch")]
    assert len(launches) == 1
    assert {keyword.arg for keyword in launches[0].keywords} & {"allowed_paths", "share"} == set()
    assert _keyword(launches[0], "max_file_size") != "<absent>"  # uploads are capped
    static = [(path.relative_to(ROOT).as_posix(), ast.unparse(node.args[0])) for path in SHIPPED
              for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.Call) and _callee(node).endswith("set_static_paths")]
    assert static == [("demo/runtime.py", "[OUTPUT_DIR]")]
    from demo import runtime

    assert runtime.OUTPUT_DIR.is_dir() and not runtime.OUTPUT_DIR.is_symlink()
    assert runtime.OUTPUT_DIR.stat().st_mode & 0o777 == 0o700 and runtime.OUTPUT_DIR.stat().st_uid == os.getuid()
    from gradio.data_classes import _StaticFiles

    # Checked first (each returned file is matched against the list in order), and listed once.
    assert _StaticFiles.all_paths[0] == runtime.OUTPUT_DIR.resolve()
    assert _StaticFiles.all_paths.count(runtime.OUTPUT_DIR.resolve()) == 1


def test_output_directory_planted_by_someone_else_is_not_used(tmp_path, monkeypatch):
    """A link or an open directory already at the fixed name is refused (the app takes a fresh private one), and
    a directory that stops being private while the app runs is never written into."""
    from demo import runtime

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    fixed = tmp_path / f"twinsight-outputs-{os.getuid()}"
    assert runtime._private_output_dir() == fixed and fixed.stat().st_mode & 0o777 == 0o700
    fixed.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fixed.symlink_to(elsewhere)
    chosen = runtime._private_output_dir()
    assert chosen != fixed and chosen.parent == tmp_path and chosen.stat().st_mode & 0o777 == 0o700
    fixed.unlink()
    fixed.mkdir(mode=0o777)
    fixed.chmod(0o777)  # umask-proof: open to everyone
    assert runtime._private_output_dir() != fixed
    monkeypatch.setattr(runtime, "OUTPUT_DIR", fixed)
    with pytest.raises(RuntimeError, match="no longer a private directory"):
        runtime.image_file(Image.new("RGB", (4, 4)))
    assert list(fixed.iterdir()) == []


@pytest.mark.parametrize("requirements", ["requirements.txt", "tests/requirements.txt"])
def test_dependencies_are_pinned(requirements):
    lines = [line.split("#")[0].strip() for line in (ROOT / requirements).read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("-r ")]
    assert lines
    unpinned = [line for line in lines if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", line)]
    assert unpinned == []


def test_gallery_image_never_opens_a_path_outside_the_index(tmp_path, tiny_clip):
    """A forged source in metadata (path traversal, absolute path, symlink) is refused; unknown ids are refused."""
    import pyarrow.parquet as pq

    from indexer import GalleryIndex, open_index
    from indexer.index import IndexFormatError

    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(secret)
    index = GalleryIndex(tiny_clip.dim, tiny_clip.name, embedder=tiny_clip)
    index.add([Image.new("RGB", (8, 8), (200, 0, 0))] * 3, labels=["x"] * 3)
    path = index.save(tmp_path / "ix")
    (path / "images" / "link.png").symlink_to(secret)
    table = pq.read_table(path / "metadata.parquet").to_pydict()
    table["source"] = ["index:../secret.png", "index:images/../../secret.png", "index:images/link.png"]
    import pyarrow as pa

    pq.write_table(pa.table(table, schema=pq.read_schema(path / "metadata.parquet")), path / "metadata.parquet")
    forged = GalleryIndex.load(path, verify=False)  # a tampered index (checksums would refuse it outright)
    for item_id in forged.ids:
        with pytest.raises(IndexFormatError, match="outside its index directory"):
            forged.image(item_id)
    for bad_id in (-1, 3, 10**9):
        with pytest.raises(KeyError):
            forged.image(bad_id)
    with pytest.raises(IndexFormatError, match="missing or damaged"):
        open_index(path, load_model=False)  # verified load: the tampering is caught by the checksums


def test_gallery_search_results_carry_no_server_paths(tmp_path, tiny_clip, monkeypatch):
    """What the API returns for hits is id, score, label and whether it is yours: never the server-side source path."""
    from demo import gallery, runtime
    from indexer import GalleryIndex

    monkeypatch.setattr(runtime.settings, "model", tiny_clip.name)
    index = GalleryIndex(tiny_clip.dim, tiny_clip.name, embedder=tiny_clip)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(photo)
    index.add([str(photo)], labels=["p"])
    runtime.use_gallery(index)
    try:
        items, _, hits = gallery.search(str(photo), "", 1)
    finally:
        runtime.use_gallery(None)
    assert hits == [{"id": 0, "score": pytest.approx(1.0, abs=1e-4), "label": "p", "yours": False}]
    assert str(tmp_path) not in str(hits) and str(tmp_path) not in str(items)
