"""HEIC/HEIF phone photos: opened through pillow-heif (registered on first need), or refused with the fix."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bad_inputs import HEIC_HEADER
from indexer import ImageError, images, load_image

pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is in requirements.txt; install it")


def heic_file(path, photo):
    pillow_heif.from_pillow(Image.fromarray(photo)).save(str(path), quality=95)
    return path


def test_heic_photo_opens_like_the_original(tmp_path, photos):
    path = heic_file(tmp_path / "iphone.heic", photos["chelsea"])
    loaded = np.asarray(load_image(path), dtype=np.int16)
    assert loaded.shape == photos["chelsea"].shape
    assert np.abs(loaded - photos["chelsea"]).mean() < 6  # lossy HEVC, but the same picture


def test_damaged_heic_names_the_format_and_the_fix(tmp_path):
    path = tmp_path / "cut.heic"
    path.write_bytes(HEIC_HEADER)
    with pytest.raises(ImageError, match=r"'cut.heic' is a HEIC file that could not be decoded.*convert it to PNG or JPEG") as caught:
        load_image(path)
    assert str(tmp_path) not in str(caught.value)  # no server paths in what the user reads


def test_without_pillow_heif_the_message_says_how_to_get_it(tmp_path, photos, monkeypatch):
    monkeypatch.setattr(images, "_heif_registered", False)  # as if pillow-heif were not installed
    path = tmp_path / "cut.heic"
    path.write_bytes(HEIC_HEADER)
    with pytest.raises(ImageError, match="a HEIC file, a format Twinsight cannot read.*install pillow-heif.*convert it to PNG"):
        load_image(path)
