"""The built-in offline gallery: ~20 real photos and textures that ship inside scikit-image, labelled by hand."""
from __future__ import annotations

from functools import partial

import numpy as np
from PIL import Image

from ..images import load_image
from .base import BUILTIN, BUILTIN_SOURCE_PREFIX, GallerySource, Record, SourceKind

# skimage.data name -> label. All these files ship inside the scikit-image wheel (no download).
BUILTIN_IMAGES: dict[str, str] = {
    "astronaut": "person",
    "camera": "person",
    "chelsea": "cat",
    "coffee": "coffee cup",
    "rocket": "rocket",
    "horse": "horse",
    "motorcycle": "motorcycle",
    "coins": "coins",
    "moon": "moon",
    "hubble_deep_field": "galaxies",
    "immunohistochemistry": "microscopy",
    "retina": "retina",
    "clock": "clock",
    "page": "text",
    "text": "text",
    "brick": "texture",
    "grass": "texture",
    "gravel": "texture",
    "colorwheel": "color wheel",
    "logo": "logo",
}


def builtin_image(name: str) -> Image.Image:
    """An image of the built-in gallery by name (only names in BUILTIN_IMAGES)."""
    if name not in BUILTIN_IMAGES:
        raise KeyError(f"{name!r} is not in the built-in gallery ({', '.join(BUILTIN_IMAGES)}).")
    import skimage.data  # heavy (scipy): only when a built-in photo is shown or embedded

    if name == "motorcycle":
        array = skimage.data.stereo_motorcycle()[0]
    else:
        array = getattr(skimage.data, name)()
    if array.dtype == bool:  # the horse is a silhouette mask
        array = np.where(array, 0, 255).astype(np.uint8)
    return load_image(array)


class BuiltinSource(GallerySource):
    """The offline gallery: ~20 real photos and textures from scikit-image, labelled by hand."""

    kind = SourceKind.BUILTIN

    def __init__(self):
        self.names = list(BUILTIN_IMAGES)

    def __len__(self):
        return len(self.names)

    def records(self, start=0, stop=None):
        for row in range(start, min(stop if stop is not None else len(self), len(self))):
            name = self.names[row]
            yield Record(row, partial(builtin_image, name), BUILTIN_IMAGES[name], f"{BUILTIN_SOURCE_PREFIX}{name}")

    def image_at(self, row):
        return builtin_image(self.names[int(row)])

    def describe(self):
        return {"kind": self.kind.value, "dataset": BUILTIN, "label_column": "label", "num_rows": len(self)}
