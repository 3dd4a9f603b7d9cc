"""What makes the app safe and quick to leave running as a public Space: persistent index storage, the CLIP weights
preloaded at build time, bounded caches, Gradio hot reload, the MCP flag."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from app_server import ROOT, free_port
from demo import gallery, runtime
from indexer.build import default_index_root


def test_index_dir_is_persistent_storage_when_there_is_some(tmp_path, monkeypatch):
    monkeypatch.delenv("TWINSIGHT_INDEX_DIR", raising=False)
    data = tmp_path / "data"
    assert default_index_root(data) == default_index_root(tmp_path / "missing")  # no /data: the home cache
    assert default_index_root(data).parts[-3:] == (".cache", "twinsight", "indexes")
    data.mkdir()
    assert default_index_root(data) == data / "twinsight" / "indexes"
    data.chmod(0o500)  # there but read-only: not used
    try:
        if not os.access(data, os.W_OK):  # root can write anyway; the read-only case is then not testable
            assert default_index_root(data) != data / "twinsight" / "indexes"
    finally:
        data.chmod(0o700)
    monkeypatch.setenv("TWINSIGHT_INDEX_DIR", str(tmp_path / "mine"))
    assert default_index_root(data) == tmp_path / "mine"  # the setting wins


def test_page_says_when_shared_additions_are_temporary(monkeypatch, tmp_path):
    class Index:
        path = tmp_path / "indexes" / "x"

    monkeypatch.setattr(runtime, "_gallery", Index())
    monkeypatch.setattr(runtime.settings, "shared_writes", True)
    monkeypatch.setattr(runtime.settings, "write_token", "t")
    monkeypatch.setenv("SPACE_ID", "user/twinsight")
    assert not runtime.gallery_is_persistent()
    assert "lost when it restarts" in gallery.additions_notice()
    monkeypatch.setattr(runtime, "PERSISTENT_DATA_DIR", tmp_path)
    assert runtime.gallery_is_persistent() and "lost" not in gallery.additions_notice()
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setattr(runtime.settings, "shared_writes", False)
    assert "yours alone" in gallery.additions_notice() and "token" not in gallery.additions_notice()


def test_space_front_matter_preloads_the_clip_weights_the_app_looks_for():
    from indexer.models.registry import cached_clip_weights
    from indexer.models.spec import DEFAULT_CLIP_SPEC, ModelSpec

    front = yaml.safe_load((ROOT / "README.md").read_text().split("---")[1])
    preloads = dict(line.split(" ", 1) for line in front["preload_from_hub"])
    import open_clip

    spec = ModelSpec.parse(DEFAULT_CLIP_SPEC)
    repo = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)["hf_hub"].rstrip("/")
    assert repo in preloads and repo in front["models"]
    # One of the files cached_clip_weights finds in the hub cache, so the app loads it without the network.
    import inspect

    assert preloads[repo] in inspect.getsource(cached_clip_weights)


def test_importing_the_app_builds_nothing():
    import app

    assert app.demo is None  # only a run (script or `gradio app.py`) loads the model and builds the page


def test_mcp_flag_needs_the_extra(monkeypatch, capsys):
    import app

    monkeypatch.setattr(app, "mcp_available", lambda: False)
    with pytest.raises(SystemExit):
        app.parse_args(["--mcp"])
    assert "pip install 'gradio[mcp]'" in capsys.readouterr().err
    monkeypatch.setattr(app, "mcp_available", lambda: True)
    assert app.parse_args(["--mcp"]).mcp is True and app.parse_args([]).mcp is False


@pytest.mark.e2e
def test_gradio_hot_reload_finds_the_module_level_demo(tmp_path):
    """`gradio app.py` runs the app in reload mode; it must find `demo` in the module (it logs when it does not)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TWINSIGHT_MODEL": "effnet-lite0",
           "TWINSIGHT_INDEX_DIR": str(tmp_path / "indexes"), "GRADIO_SERVER_PORT": str(port)}
    log = tmp_path / "reload.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "gradio"), "app.py"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "Watching demo:" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        # The reloader prints the line while the server may still be starting: wait for it to answer.
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=10) as response:
                    assert response.status == 200
                break
            except urllib.error.URLError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        text = log.read_text()
        assert "Watching demo: demo" in text and "not found" not in text and "is not the launched demo" not in text
    finally:
        os.killpg(process.pid, 15)  # the reloader's own process group: the CLI and the app it started
        process.wait(timeout=30)


def test_sync_is_private_and_runs_one_at_a_time():
    """/sync_gallery rewrites the shared index: it is not in the public API, and two syncs never run at once
    (Gradio's queue holds the second until the first ends)."""
    import app

    functions = {fn.api_name: fn for fn in app.build_app().fns.values()}
    sync = functions["sync_gallery"]
    assert sync.api_visibility == "private" and sync.concurrency_limit == 1
    assert functions["search"].api_visibility == "public" and functions["search"].concurrency_limit != 1
