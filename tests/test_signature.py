"""Signature preprocessing on drawn strokes."""
import numpy as np
import pytest
from PIL import Image, ImageOps

from indexer.signature import SignatureError, preprocess_signature
from verify_support import stroke_image

SIGNATURE = [(20, 80), (50, 30), (70, 90), (110, 40), (140, 85), (180, 35), (230, 70)]


def ink_box(image: Image.Image, level: int = 128):
    dark = np.asarray(image.convert("L")) < level
    rows, cols = np.flatnonzero(dark.any(1)), np.flatnonzero(dark.any(0))
    return rows[0], rows[-1], cols[0], cols[-1]


def test_output_is_square_centred_ink_on_white_background():
    out = preprocess_signature(stroke_image(SIGNATURE, noise=6.0))
    assert out.size == (224, 224) and out.mode == "RGB"
    gray = np.asarray(out.convert("L"))
    assert gray[0, 0] == 255 and gray[-1, -1] == 255  # paper (and its noise) removed
    top, bottom, left, right = ink_box(out)
    assert abs((left + right) / 2 - 111.5) < 6 and abs((top + bottom) / 2 - 111.5) < 6
    assert right - left > 180  # ink spans the width: cropped to the strokes, not the page


def test_aspect_ratio_is_kept():
    out = preprocess_signature(stroke_image([(20, 60), (280, 60)], width=6))
    top, bottom, left, right = ink_box(out)
    assert (right - left) / (bottom - top + 1) > 8  # a flat line stays flat, it is padded, not stretched


def test_position_on_the_page_does_not_matter():
    a = preprocess_signature(stroke_image(SIGNATURE, size=(400, 200)))
    b = preprocess_signature(stroke_image(SIGNATURE, size=(400, 200), offset=(120, 90)))
    assert np.abs(np.asarray(a, float) - np.asarray(b, float)).mean() < 1.0


def test_light_ink_on_dark_paper_is_inverted():
    dark_on_light = stroke_image(SIGNATURE)
    light_on_dark = ImageOps.invert(dark_on_light)
    a, b = preprocess_signature(dark_on_light), preprocess_signature(light_on_dark)
    assert np.asarray(b.convert("L"))[0, 0] == 255
    assert np.abs(np.asarray(a, float) - np.asarray(b, float)).mean() < 2.0


def test_blank_page_is_refused_with_a_fix():
    with pytest.raises(SignatureError, match="no ink"):
        preprocess_signature(Image.new("RGB", (200, 100), "white"))
    assert issubclass(SignatureError, ValueError)
