"""The face pairs of tests/fixtures/faces (see its README): images generated from faces shipped with scikit-image."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

FIXTURE = Path(__file__).parent / "fixtures" / "faces"
LFW_FACES = (0, 1, 2, 3, 5, 6, 7, 8, 10, 11)  # lfw_subset's first faces that dlib's detector finds at 150 px


def astronaut_views() -> dict[str, Image.Image]:
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    head = photo.crop((80, 0, 400, 320))
    return {
        "astronaut": photo,
        "astronaut-crop": photo.crop((100, 0, 380, 280)),
        "astronaut-small": photo.crop((60, 0, 460, 400)).resize((260, 260)),
        "astronaut-mirror": ImageOps.mirror(head),
        "astronaut-dark": ImageEnhance.Brightness(head).enhance(0.6),
        "astronaut-grey": ImageOps.grayscale(photo.crop((100, 10, 380, 290))).convert("RGB"),
        "astronaut-rotated": photo.crop((60, 0, 460, 400)).rotate(8, resample=Image.Resampling.BICUBIC),
        "astronaut-contrast": ImageEnhance.Contrast(photo.crop((120, 20, 360, 260))).enhance(1.4),
    }


def lfw_views() -> dict[str, Image.Image]:
    from skimage import data

    faces = data.lfw_subset()
    views = {}
    for k in LFW_FACES:
        face = Image.fromarray((faces[k] * 255).astype(np.uint8)).convert("RGB").resize((150, 150), Image.Resampling.BICUBIC)
        views[f"lfw-{k:02d}"] = face
        views[f"lfw-{k:02d}-mirror"] = ImageOps.mirror(face)
        views[f"lfw-{k:02d}-bright"] = ImageEnhance.Brightness(face).enhance(1.25)
    return views


def write_face_pairs(folder: Path) -> Path:
    """Write the images and pairs.csv into `folder`; returns the pairs file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in {**astronaut_views(), **lfw_views()}.items():
        image.save(folder / f"{name}.png")
    return Path(shutil.copy(FIXTURE / "pairs.csv", folder / "pairs.csv"))
