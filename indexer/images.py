"""Safe image loading: every source becomes an RGB PIL image, or an ImageError that says what to do."""
from __future__ import annotations

import io
import os
import re
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import settings
from .errors import UserInputError

# Decompression-bomb guard. 64 MP covers every camera photo; a 30000x30000 image (900 MP) is refused
# before its pixels are decoded. Raise it with TWINSIGHT_MAX_PIXELS for huge scans.
MAX_PIXELS = settings().max_pixels

ORIENTATION_TAG = 0x0112  # EXIF: how a camera held sideways wants the pixels turned
ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]
BYTES_PER_PIXEL = 4  # PIL keeps RGB (and RGBA, CMYK, 32-bit) pixels in 4 bytes


class ImageError(UserInputError):
    """An input that cannot be used as an image. The message names the problem and the fix."""


class DecodeBudget:
    """Bytes of decoded pixels alive at once in this process, shared by every request and decode worker.

    MAX_PIXELS bounds one image; this bounds them all together (16 concurrent requests of two 64 MP uploads would
    otherwise hold ~8 GB). An image decoded from a file or bytes reserves its size before its pixels are decoded
    and gives it back when the image is garbage-collected. A decode waits, up to `wait_seconds`, while images
    held by *other* threads leave no room for it, then fails with a message. It never waits for its own thread's
    images (a request adding 50 photos to the gallery holds them all; waiting for itself would never end), so one
    request alone always proceeds, as does an image larger than the whole budget."""

    def __init__(self, limit_bytes: int, wait_seconds: float = 30.0):
        self.limit_bytes = limit_bytes
        self.wait_seconds = wait_seconds
        self.used_bytes = 0
        self._held_by_thread: dict[int, int] = {}
        self._changed = threading.Condition()

    def reserve(self, nbytes: int, name: str) -> int:
        """Reserve `nbytes` for the calling thread; returns the owner to pass to `release`."""
        owner = threading.get_ident()
        deadline = time.monotonic() + self.wait_seconds
        with self._changed:
            while (others := self.used_bytes - self._held_by_thread.get(owner, 0)) and others + nbytes > self.limit_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ImageError(
                        f"{name} decodes to {nbytes / 2**20:,.0f} MB, and other requests' images fill the decode "
                        f"budget ({self.limit_bytes / 2**20:,.0f} MB, TWINSIGHT_DECODE_BUDGET_MB) for now: try again "
                        "in a moment, send a smaller image, or raise TWINSIGHT_DECODE_BUDGET_MB."
                    )
                self._changed.wait(left)
            self.used_bytes += nbytes
            self._held_by_thread[owner] = self._held_by_thread.get(owner, 0) + nbytes
        return owner

    def release(self, nbytes: int, owner: int) -> None:
        with self._changed:
            self.used_bytes -= nbytes
            left = self._held_by_thread.pop(owner, 0) - nbytes
            if left:
                self._held_by_thread[owner] = left
            self._changed.notify_all()

    def hold_until_freed(self, image: Image.Image, nbytes: int, owner: int) -> None:
        """Give `nbytes` back when `image` is garbage-collected."""
        weakref.finalize(image, self.release, nbytes, owner)


# 1 GB: four 64 MP images at once; most photos are a few MB decoded, and JPEGs bound for a model decode reduced.
DECODE_BUDGET = DecodeBudget(settings().decode_budget_mb * 2**20)


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS, draft_side: int | None = None) -> Image.Image:
    """Open `source` (path, bytes, PIL image or HxW[xC] array) as an upright RGB image.

    Handles EXIF rotation, the first frame of animations, 16-bit and float images, CMYK, palette and
    alpha (composited on white, so transparent backgrounds do not turn black).
    """
    if source is None:
        raise ImageError("No image given: upload or drop an image file.")
    if isinstance(source, Image.Image):
        image = source
        _check_size(image.size, max_pixels, "the image")
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
        _check_size(image.size, max_pixels, "the array")
    else:
        image, nbytes, owner = _open(source, max_pixels, draft_side)
        try:
            image = to_rgb(image)
        except BaseException:
            DECODE_BUDGET.release(nbytes, owner)
            raise
        DECODE_BUDGET.hold_until_freed(image, nbytes, owner)
        return image
    return to_rgb(image)


def _open(source: Union[str, os.PathLike, bytes], max_pixels: int, draft_side: int | None = None) -> tuple[Image.Image, int, int]:
    """The decoded image, the bytes it holds of DECODE_BUDGET and their owner (the caller gives them back)."""
    if isinstance(source, (bytes, bytearray)):
        name, data = "the uploaded data", bytes(source)
        if not data:
            raise ImageError("The image is empty (0 bytes): upload a JPEG, PNG, WebP, GIF, BMP or TIFF file.")
        fp = io.BytesIO(data)
    else:
        path = Path(source)
        name = f"'{path.name}'"
        try:
            if not path.is_file():
                raise FileNotFoundError
            empty = path.stat().st_size == 0
            fp = path.open("rb")
        except OSError:  # missing, a directory, unreadable, or deleted while we looked
            raise ImageError(f"Image file {path} does not exist or cannot be read: check the path.") from None
        if empty:
            fp.close()
            raise ImageError(f"Image file {name} is empty (0 bytes): upload a JPEG, PNG, WebP, GIF, BMP or TIFF file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image = _open_any(fp, name)
            except Image.DecompressionBombError as exc:
                found = re.search(r"\((\d+) pixels\)", str(exc))
                size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
                raise ImageError(
                    f"{name} has {size}, over the limit of {max_pixels:,} (a guard against decompression bombs); "
                    "downscale it, or raise TWINSIGHT_MAX_PIXELS."
                ) from None
            _check_size(image.size, max_pixels, name)
            if draft_side and image.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale in the DCT (both sides stay >= draft_side): a 1600 px photo
                # bound for a 224 px model decodes several times faster, which keeps index builds model-bound.
                image.draft(None, (draft_side, draft_side))
            nbytes = image.size[0] * image.size[1] * BYTES_PER_PIXEL  # after draft: the reduced size
            owner = DECODE_BUDGET.reserve(nbytes, name)
            try:
                image.seek(0)  # first frame of animated GIF/WebP/APNG
                image.load()
            except BaseException as exc:
                DECODE_BUDGET.release(nbytes, owner)
                if isinstance(exc, (OSError, SyntaxError, ValueError)):
                    raise ImageError(f"{name} is truncated or corrupt ({exc}); re-export or re-upload the file.") from None
                raise
        return image, nbytes, owner
    finally:
        if not isinstance(source, (bytes, bytearray)):
            fp.close()


def _open_any(fp, name: str) -> Image.Image:
    """Image.open, and for a HEIC/HEIF phone photo Pillow cannot read, pillow-heif's opener (registered on first
    need, when it is installed). Anything else unreadable is an ImageError naming the format and the fix."""
    try:
        return Image.open(fp)
    except UnidentifiedImageError:
        fp.seek(0)
        known = _sniff_unsupported(fp.read(512))
    if known in HEIF_KINDS and _register_heif_opener():
        fp.seek(0)
        try:
            return Image.open(fp)
        except (UnidentifiedImageError, OSError, ValueError, RuntimeError):  # their text names server paths
            raise ImageError(f"{name} is {known} that could not be decoded (damaged or cut short); re-export it, or "
                             "convert it to PNG or JPEG and try again.") from None
    what = f"{known}, a format Twinsight cannot read" if known else "not an image format Twinsight can read"
    fix = "install pillow-heif to read it, or " if known in HEIF_KINDS else ""
    raise ImageError(
        f"{name} is {what} (it reads JPEG, PNG, WebP, GIF, BMP, TIFF); {fix}convert it to PNG or JPEG and try again."
    ) from None


HEIF_KINDS = ("a HEIC file", "a HEIF file")
_heif_lock = threading.Lock()
_heif_registered: bool | None = None  # None: not tried yet


def _register_heif_opener() -> bool:
    """Teach Pillow HEIC/HEIF (iPhone photos) through pillow-heif, once; False when it is not installed."""
    global _heif_registered
    with _heif_lock:
        if _heif_registered is None:
            try:
                import pillow_heif
            except ImportError:
                _heif_registered = False
            else:
                pillow_heif.register_heif_opener()
                _heif_registered = True
        return _heif_registered


_UNSUPPORTED_BRANDS = {b"heic": "a HEIC", b"heix": "a HEIC", b"hevc": "a HEIC", b"heim": "a HEIC", b"heis": "a HEIC",
                       b"mif1": "a HEIF", b"msf1": "a HEIF", b"avif": "an AVIF", b"avis": "an AVIF"}


def _sniff_unsupported(head: bytes) -> str | None:
    """Name a common format Pillow cannot open (so the message can say what the file is), or None."""
    if head[4:8] == b"ftyp":
        return _UNSUPPORTED_BRANDS.get(head[8:12], "a HEIF/MP4 container") + " file"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "an SVG (vector drawing) file"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    return None


def _check_size(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels ({width}x{height}); upload a real image.")
    if width * height > max_pixels:
        raise ImageError(
            f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(a guard against decompression bombs); downscale it, or raise TWINSIGHT_MAX_PIXELS."
        )


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(f"An image array must be HxW, HxWx3 or HxWx4; got shape {array.shape}.")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8:
        array = _scale_to_uint8(array)
    return Image.fromarray(array)


def _scale_to_uint8(array: np.ndarray, full_scale: float | None = None) -> np.ndarray:
    is_float = np.issubdtype(array.dtype, np.floating)
    array = np.asarray(array, dtype=np.float64)
    if is_float and array.size and array.max() <= 1.0 and array.min() >= 0.0:
        return np.round(array * 255).astype(np.uint8)
    high = full_scale or (65535.0 if array.max(initial=0) > 255 else 255.0)
    return np.clip(np.round(array / high * 255), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB version of an opened image; alpha is composited on white. `image` itself is never changed, and
    is returned as it is when already upright RGB (a copy of every photo cost ~1 ms per request for nothing)."""
    if image.getexif().get(ORIENTATION_TAG, 1) != 1:
        image = ImageOps.exif_transpose(image)  # a new, rotated image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # PIL's own I->RGB conversion clips 16-bit values to 255, which turns most photos white.
        full_scale = 65535.0 if image.mode.startswith("I;16") else None
        image = Image.fromarray(_scale_to_uint8(np.asarray(image), full_scale))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return image
