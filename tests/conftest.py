import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # on sys.path through pytest.ini's `pythonpath`, as tests/ is
# Tests never reach the hub: a test that needs it is a broken test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Everything the tests and the apps they start put in the temp directory (Gradio's uploads, gradio_client's
# downloads, the app's output directory) goes in one directory of this run's, removed at the end, so runs on a
# shared machine leave nothing behind in /tmp.
SESSION_TMP = tempfile.mkdtemp(prefix="twinsight-tests-")
os.environ["TMPDIR"] = SESSION_TMP
tempfile.tempdir = None  # gettempdir() re-reads TMPDIR


def _remove_session_tmp(owner: int = os.getpid()) -> None:
    # At exit, not at session end: a process may run several sessions (mutmut does, and forks workers that
    # share the directory), and only the process that made it removes it.
    if os.getpid() == owner:
        shutil.rmtree(SESSION_TMP, ignore_errors=True)


atexit.register(_remove_session_tmp)

from tiny_models import make_gallery_images, register_tiny_open_clip, save_tiny_hf_clip, save_tiny_vit  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.shared_data("faces-dev/pairs.csv")`: skipped, saying what is missing, where the dev data is not."""
    for item in items:
        marker = item.get_closest_marker("shared_data")
        if marker is None:
            continue
        needed = SHARED_DATA.joinpath(*marker.args)
        if not needed.exists():
            item.add_marker(pytest.mark.skip(reason=f"needs the dev data {needed} (../shared/data), not present here"))


@pytest.fixture(scope="session")
def tiny_clip_spec() -> str:
    return register_tiny_open_clip()


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_spec):
    from indexer import load_embedder

    return load_embedder(tiny_clip_spec)  # the shared instance, as the app would get it


@pytest.fixture(scope="session")
def effnet():
    from indexer import load_embedder

    return load_embedder("effnet-lite0", device="cpu")


@pytest.fixture(scope="session")
def tiny_hf_clip_dir(tmp_path_factory) -> Path:
    return save_tiny_hf_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("hf") / "tiny-vit")


@pytest.fixture(scope="session")
def tiny_vit_classifier_dir(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("hf") / "tiny-vit-cls", labels=["apple", "banana", "cherry"])


@pytest.fixture(scope="session")
def photos():
    """Real photos that ship with scikit-image."""
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")}


@pytest.fixture()
def gallery_dataset():
    """A datasets.Dataset with an Image feature and a ClassLabel, 24 rows, 3 classes."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["red", "green", "blue"]),
                                  "caption": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"image": make_gallery_images(24, seed=1), "label": [i % 3 for i in range(24)], "caption": [f"item {i}" for i in range(24)]},
        features=features,
    )


@pytest.fixture()
def gallery_folder(tmp_path):
    """An Omniglot-like folder: ALPHABET/characterNN/*.png, 12 images in 4 label folders."""
    root = tmp_path / "folder"
    for i, image in enumerate(make_gallery_images(12, seed=2)):
        folder = root / f"Alphabet_{i % 2}" / f"character{i % 4:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:03d}.png")
    return root
