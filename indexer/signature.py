"""Signature (and handwriting) preprocessing: ink on paper -> a centred, square, dark-on-white crop.

Steps: grayscale, Otsu threshold, polarity check (ink is the minority class, so light ink on dark paper
is inverted), background removal (paper becomes pure white, ink keeps its grey levels), crop to the ink
with a margin, pad to a square without stretching (aspect ratio kept), resize for the backbone.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import UserInputError
from .images import ImageSource, load_image

OUTPUT_SIZE = 224
MARGIN = 0.08  # padding around the ink, as a fraction of its longer side
MIN_INK_PIXELS = 8


class SignatureError(UserInputError):
    """The image holds no usable ink. The message names the problem and the fix."""


def otsu_threshold(gray: np.ndarray) -> float:
    """Otsu's threshold of a uint8 grayscale image (scikit-image's, which handles edge cases)."""
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(gray))


def ink_mask(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """(True where ink is, whether the image was light ink on dark paper)."""
    if gray.min() == gray.max():
        raise SignatureError("The image is a single flat colour with no ink; upload a scan or photo of the signature.")
    threshold = otsu_threshold(gray)
    dark = gray <= threshold
    inverted = bool(dark.mean() > 0.5)  # ink is the minority of pixels
    return (~dark if inverted else dark), inverted


def ink_crop(source: ImageSource, aspect: float = 1.0, margin: float = MARGIN, crop: bool = True) -> np.ndarray:
    """The ink of `source` as a uint8 array, dark on white paper, cropped to the ink with `margin` and padded
    (never stretched) to width / height = `aspect`, the ink centred. crop=False keeps the whole page (where on
    it the ink sits, and how large, then still count) and only pads it. Raises SignatureError when there is no ink."""
    image = load_image(source)
    gray = np.asarray(image.convert("L"), dtype=np.uint8)
    mask, inverted = ink_mask(gray)
    if mask.sum() < MIN_INK_PIXELS:
        raise SignatureError("Almost no ink was found; upload a sharper or higher-contrast image of the signature.")
    ink = (255 - gray) if inverted else gray
    # Background removal: paper -> white; ink keeps its darkness (stroke pressure shows in grey levels).
    cleaned = np.where(mask, ink, 255).astype(np.uint8)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if not crop:
        (top, left), (bottom, right), margin = (0, 0), gray.shape, 0.0
    crop = cleaned[top:bottom, left:right]
    height, width = crop.shape
    pad = max(height, width) * margin
    out_height = int(np.ceil(max(height + 2 * pad, (width + 2 * pad) / aspect)))
    out_width = int(np.ceil(max(width + 2 * pad, out_height * aspect)))
    canvas = np.full((out_height, out_width), 255, dtype=np.uint8)
    y, x = (out_height - height) // 2, (out_width - width) // 2
    canvas[y : y + height, x : x + width] = crop
    return canvas


def preprocess_signature(source: ImageSource, size: int = OUTPUT_SIZE, width: int | None = None) -> Image.Image:
    """A `size` high, `width` (default `size`) wide RGB image of the ink, dark on white, centred, its aspect ratio
    kept (padded, never stretched)."""
    width = width or size
    return Image.fromarray(ink_crop(source, aspect=width / size)).resize((width, size), Image.LANCZOS).convert("RGB")
