"""Write the pairwise tab's example images into assets/examples/ (all made from material the project ships).

    .venv/bin/python assets/make_examples.py

Photos come from scikit-image; the face pair is one photo and a re-framed, re-lit copy of it (no face data set
may be committed); signatures are synthetic pen strokes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import skimage.data
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from indexer.augment import scribble_writers  # noqa: E402

OUT = Path(__file__).parent / "examples"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    cat = Image.fromarray(skimage.data.chelsea())
    cat.crop((0, 0, 380, 300)).save(OUT / "cat-a.jpg", quality=88)
    cat.crop((60, 0, 451, 300)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(OUT / "cat-b.jpg", quality=88)
    Image.fromarray(skimage.data.coffee()).resize((400, 267)).save(OUT / "coffee.jpg", quality=88)
    face = Image.fromarray(skimage.data.astronaut())
    face.crop((100, 0, 400, 300)).save(OUT / "face-a.jpg", quality=88)
    relit = ImageEnhance.Brightness(face.rotate(8, fillcolor="white").crop((60, 10, 420, 370))).enhance(1.25)
    relit.resize((300, 300)).save(OUT / "face-b.jpg", quality=88)
    writers = scribble_writers(n_writers=2, samples=2, seed=42)  # a seed the calibration does not use
    writers[0][0].save(OUT / "signature-a.png")
    writers[1][0].save(OUT / "signature-b.png")
    writers[2][0].save(OUT / "signature-other.png")
    print(f"wrote {len(list(OUT.iterdir()))} files to {OUT}")


if __name__ == "__main__":
    main()
