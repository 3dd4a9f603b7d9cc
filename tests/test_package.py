"""The installable package: cheap top-level import, every export resolves, the wheel holds the code and the
`twinsight` command, and the command dispatches to the app and the library's subcommands."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "hnswlib", "pyarrow", "gradio", "datasets")


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_import_indexer_loads_no_heavy_library():
    loaded = json.loads(_python(f"import sys, json, indexer, indexer.config, indexer.errors, indexer.models, indexer.siamese; "
                                f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"))
    assert loaded == []


@pytest.mark.parametrize("package", ["indexer", "indexer.models", "indexer.siamese"])
def test_every_export_resolves_and_is_listed(package):
    out = json.loads(_python(
        f"import importlib, json; p = importlib.import_module({package!r}); "
        "missing = [n for n in p.__all__ if getattr(p, n, None) is None]; "
        "print(json.dumps({'missing': missing, 'in_dir': all(n in dir(p) for n in p.__all__)}))"))
    assert out == {"missing": [], "in_dir": True}


def test_unknown_attribute_is_an_attribute_error():
    import indexer

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        indexer.nope  # noqa: B018


def test_wheel_holds_the_code_licence_and_console_command(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "app.py"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("indexer", "demo"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel = zipfile.ZipFile(next(tmp_path.glob("twinsight-*.whl")))
    names = wheel.namelist()
    assert "app.py" in names and "indexer/__init__.py" in names and "demo/runtime.py" in names
    assert "indexer/siamese/train.py" in names and "indexer/models/registry.py" in names
    for model in ("signature-encoder", "omniglot-encoder"):  # the shipped encoders travel with the package
        assert {f"indexer/siamese/pretrained/{model}/card.json", f"indexer/siamese/pretrained/{model}/encoder.safetensors"} <= set(names)
    assert "indexer/siamese/pretrained/signature-encoder/centres.safetensors" in names  # its companion's centres
    assert any(n.endswith("licenses/LICENSE") for n in names)
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "twinsight = app:cli" in entry_points
    import indexer

    metadata = wheel.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert f"Version: {indexer.__version__}" in metadata
    assert "Provides-Extra: milvus" in metadata


def test_console_command_dispatches(capsys):
    import app

    assert app.cli([]) == 2
    assert "commands:" in capsys.readouterr().err
    assert app.cli(["--help"]) == 0
    assert "commands:" in capsys.readouterr().out
    # Each command's own options show that the call reached that command's parser.
    for command, option in (("build", "--dataset"), ("search", "--index"), ("compare", "--threshold"),
                            ("train", "--loss"), ("eval", "--oneshot"), ("app", "--gallery")):
        with pytest.raises(SystemExit) as exit_:
            app.cli([command, "--help"])
        assert exit_.value.code == 0
        assert option in capsys.readouterr().out
