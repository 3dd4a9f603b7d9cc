"""Every odd image a user can upload is either handled correctly or refused with a clear message."""
import io

import numpy as np
import pytest
from PIL import Image

from bad_inputs import png_claiming_size
from indexer import ImageError, load_image


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_plain_rgb_path_bytes_array_and_pil_agree(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    path = _save(Image.fromarray(rgb), tmp_path / "a.png")
    for source in (path, str(path), path.read_bytes(), rgb, Image.fromarray(rgb)):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (30, 20)
        np.testing.assert_array_equal(np.asarray(image), rgb)


def test_empty_file_and_empty_bytes(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="No image"):
        load_image(None)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_text_renamed_png_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello, I am text")
    with pytest.raises(ImageError, match="not an image format"):
        load_image(tmp_path / "notes.png")


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(tmp_path / "cut.jpg")


def test_one_pixel_image(tmp_path):
    image = load_image(_save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "dot.png"))
    assert image.size == (1, 1) and image.getpixel((0, 0)) == (10, 20, 30)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    image = load_image(_save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg"))
    assert image.mode == "RGB"
    r, g, b = image.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60  # pure magenta+yellow ink is red


def test_16_bit_png_keeps_its_range(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    path = _save(Image.fromarray(ramp), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    values = np.asarray(load_image(path))[:, :, 0]
    assert values.min() == 0 and values.max() == 255
    assert len(np.unique(values)) > 50  # not clipped to white


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    path = _save(image, tmp_path / "pal.png", transparency=0)
    loaded = load_image(path)
    assert loaded.getpixel((1, 1)) == (255, 255, 255)  # transparent black -> white, not black
    assert loaded.getpixel((0, 0)) == (255, 0, 0)


def test_rgba_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    loaded = load_image(_save(rgba, tmp_path / "a.png"))
    assert loaded.getpixel((3, 3)) == (255, 255, 255) and loaded.getpixel((0, 0)) == (0, 0, 255)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    loaded = load_image(_save(image, tmp_path / "rot.jpg", exif=exif))
    assert loaded.size == (20, 40)


def test_a_callers_image_is_never_changed(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = Image.open(_save(Image.new("RGB", (40, 20), "white"), tmp_path / "rot.jpg", exif=exif))
    assert load_image(sideways).size == (20, 40)
    assert sideways.size == (40, 20) and sideways.getexif().get(0x0112) == 6  # rotated into a new image
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255) and rgba.mode == "RGBA"


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    r, g, b = load_image(path).getpixel((4, 4))
    assert r > 200 and b < 50


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_claiming_size(30000, 30000))
    with pytest.raises(ImageError, match="900,000,000 pixels, over the limit"):
        load_image(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="over the limit"):
        load_image(png_claiming_size(30000, 30000))


def test_limit_is_configurable(tmp_path):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "a.png")
    with pytest.raises(ImageError, match="over the limit of 5,000"):
        load_image(path, max_pixels=5000)


def test_grayscale_and_float_arrays():
    assert load_image(np.zeros((5, 6), dtype=np.uint8)).size == (6, 5)
    floats = load_image(np.full((4, 4, 3), 0.5, dtype=np.float32))
    assert floats.getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 2, 2, 2), dtype=np.uint8))


def test_embedder_reports_bad_images_clearly(effnet, tmp_path):
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="bad.jpg"):
        effnet.encode_images([tmp_path / "bad.jpg"])
    # ...and keeps working afterwards.
    assert effnet.encode_images([Image.new("RGB", (1, 1))]).shape == (1, 1280)


def test_jpeg_draft_decoding_is_smaller_and_embeds_the_same(effnet, tmp_path):
    import skimage.data

    photo = Image.fromarray(skimage.data.chelsea()).resize((1800, 1360), Image.BICUBIC)
    photo.save(tmp_path / "big.jpg", quality=92)
    full = load_image(tmp_path / "big.jpg")
    draft = load_image(tmp_path / "big.jpg", draft_side=256)
    assert full.size == (1800, 1360)
    assert min(draft.size) >= 256 and draft.size[0] < 1800 / 2  # decoded at 1/4 scale or less
    assert load_image(tmp_path / "big.jpg", draft_side=2000).size == (1800, 1360)  # never below the request
    a, b = effnet.encode_images([full, draft])
    assert float(a @ b) > 0.99


def _png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


def test_decoded_pixels_are_held_against_the_budget_until_the_image_is_freed(monkeypatch):
    import gc

    from indexer import images

    budget = images.DecodeBudget(limit_bytes=10**9)
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    first, second = load_image(_png_bytes(300, 200)), load_image(_png_bytes(100, 50))
    assert budget.used_bytes == (300 * 200 + 100 * 50) * images.BYTES_PER_PIXEL
    del first
    gc.collect()
    assert budget.used_bytes == 100 * 50 * images.BYTES_PER_PIXEL
    del second
    gc.collect()
    assert budget.used_bytes == 0
    with pytest.raises(ImageError):
        load_image(b"\x89PNG\r\n\x1a\n" + _png_bytes(40, 40)[8:60])  # truncated: its reservation is given back
    assert budget.used_bytes == 0


def test_a_full_budget_makes_other_threads_wait_then_refuse_clearly(monkeypatch):
    import gc
    import threading
    import time

    from indexer import images

    budget = images.DecodeBudget(limit_bytes=300 * 200 * images.BYTES_PER_PIXEL, wait_seconds=5.0)
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)

    def in_thread(call):
        result = {}
        thread = threading.Thread(target=lambda: result.update(value=call()))
        thread.start()
        return thread, result

    held = load_image(_png_bytes(300, 200))  # fills the budget
    thread, result = in_thread(lambda: load_image(_png_bytes(200, 200)))
    thread.join(0.5)
    assert thread.is_alive() and "value" not in result  # waits while this thread's image is alive
    del held
    gc.collect()
    thread.join(5.0)
    assert not thread.is_alive() and result["value"].size == (200, 200)
    del result["value"]
    gc.collect()
    assert budget.used_bytes == 0
    # One thread never waits for its own images (a gallery upload holds all of its photos at once), not even past
    # the whole budget; meanwhile another thread waits for them, and is refused with a message when that lasts.
    own = [load_image(_png_bytes(300, 200)) for _ in range(3)]
    assert budget.used_bytes == 3 * 300 * 200 * images.BYTES_PER_PIXEL
    budget.wait_seconds = 0.3

    def refused():
        try:
            load_image(_png_bytes(10, 10))
        except ImageError as exc:
            return str(exc)

    started = time.monotonic()
    thread, result = in_thread(refused)
    thread.join(5.0)
    assert "other requests' images fill the decode budget" in result["value"] and "TWINSIGHT_DECODE_BUDGET_MB" in result["value"]
    assert time.monotonic() - started >= 0.3
    assert len(own) == 3
