"""A generated corpus of the odd and hostile uploads a public Space receives (docs/RELIABILITY.md).

`make_corpus(folder)` writes every case into `folder` and returns them as `Case`s: either the app must give
a correct result (`ok=True`), or refuse with a message matching `message` (a regex naming the problem).
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    ok: bool  # True: a correct result is expected; False: a gr.Error whose message matches `message`
    message: str = ""
    size: tuple[int, int] | None = None  # (width, height) the upright image must have, where it is known


def _photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A photo-like RGB image (smooth gradients plus texture), distinct per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    array = np.clip(base + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's signature, without the memory."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr: ihdr + 17])))
    return bytes(data)


def _exif_rotated_jpeg() -> bytes:
    """A 64x48 JPEG whose EXIF orientation (6: rotate 90° clockwise) makes it 48x64 upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    _photo(64, 48, seed=3).save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def _animated_gif() -> bytes:
    frames = [_photo(40, 30, seed=s).convert("P", palette=Image.ADAPTIVE) for s in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _palette_with_transparency() -> bytes:
    image = _photo(40, 40, seed=4).convert("P", palette=Image.ADAPTIVE, colors=16)
    return _encoded(image, "PNG", transparency=0)


def _sixteen_bit() -> bytes:
    y, x = np.mgrid[0:48, 0:64]
    array = (x * 1000 + y * 20).astype(np.uint16)  # values far above 255: naive conversion turns white
    return _encoded(Image.fromarray(array), "PNG")


HEIC_HEADER = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
AVIF_HEADER = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle cx="32" cy="32" r="20"/></svg>\n'


def make_corpus(folder: str | Path) -> list[Case]:
    """Write every case into `folder`; return them in a fixed order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = _encoded(_photo(64, 48, seed=1), "JPEG", quality=90)
    png = _encoded(_photo(64, 48, seed=2), "PNG")
    specs: list[tuple[str, str, bytes, bool, str, tuple[int, int] | None]] = [
        # Correct handling expected.
        ("control-jpeg", "control.jpg", jpeg, True, "", (64, 48)),
        ("cmyk-jpeg", "cmyk.jpg", _encoded(_photo(64, 48, seed=5).convert("CMYK"), "JPEG"), True, "", (64, 48)),
        ("16-bit-png", "sixteen.png", _sixteen_bit(), True, "", (64, 48)),
        ("palette-transparency-png", "palette.png", _palette_with_transparency(), True, "", (40, 40)),
        ("exif-rotated-jpeg", "rotated.jpg", _exif_rotated_jpeg(), True, "", (48, 64)),
        ("animated-gif", "animated.gif", _animated_gif(), True, "", (40, 30)),
        ("webp", "photo.webp", _encoded(_photo(64, 48, seed=6), "WEBP"), True, "", (64, 48)),
        ("1x1-png", "one.png", _encoded(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), True, "", (1, 1)),
        ("grayscale-alpha-png", "la.png", _encoded(_photo(32, 32, seed=7).convert("LA"), "PNG"), True, "", (32, 32)),
        ("png-named-jpg", "really-a-png.jpg", png, True, "", (64, 48)),
        ("tiff", "scan.tiff", _encoded(_photo(64, 48, seed=8), "TIFF"), True, "", (64, 48)),
        ("bmp", "old.bmp", _encoded(_photo(64, 48, seed=9), "BMP"), True, "", (64, 48)),
        ("tall-thin-png", "strip.png", _encoded(_photo(2, 500, seed=10), "PNG"), True, "", (2, 500)),
        # A clear refusal expected: the message names the problem.
        ("zero-byte", "empty.png", b"", False, r"empty \(0 bytes\)", None),
        ("truncated-jpeg", "truncated.jpg", jpeg[: len(jpeg) // 2], False, r"truncated or corrupt", None),
        ("truncated-png", "truncated.png", png[: len(png) // 2], False, r"truncated or corrupt", None),
        ("text-renamed-png", "notes.png", b"These are my notes, not a picture.\n" * 20, False, r"not an image format", None),
        ("html-renamed-jpg", "page.jpg", b"<html><script>alert(1)</script></html>", False, r"not an image format", None),
        ("svg", "drawing.svg", SVG, False, r"SVG.*convert it to PNG or JPEG", None),
        ("heic", "iphone.heic", HEIC_HEADER, False, r"HEIC.*convert it to PNG or JPEG", None),
        ("avif", "photo.avif", AVIF_HEADER, False, r"AVIF.*convert it to PNG or JPEG", None),
        ("pdf", "scan.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", False, r"PDF.*convert it to PNG or JPEG", None),
        ("bomb-30000x30000", "bomb.png", png_claiming_size(30000, 30000), False, r"900,000,000 pixels.*decompression bomb", None),
        ("zero-width-header", "zero.png", png_claiming_size(0, 10), False, r"not an image format|no pixels|truncated or corrupt", None),
    ]
    cases = []
    for name, filename, data, ok, message, size in specs:
        path = folder / filename
        path.write_bytes(data)
        cases.append(Case(name, path, ok, message, size))
    missing = folder / "deleted-before-upload.png"
    cases.append(Case("missing-file", missing, False, r"does not exist"))
    return cases
