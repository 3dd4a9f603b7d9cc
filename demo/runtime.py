"""Heavy objects every tab shares, loaded once per process (lazily, or eagerly by `warm_up`).

Per-user data never lives here; only the model and the gallery index, which all users share.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import io
import logging
import os
import stat
import tempfile
import threading
import uuid
from pathlib import Path
from dataclasses import dataclass, field

import gradio as gr

from indexer import Embedder, GalleryIndex, config, load_embedder
from indexer.atomic import write_atomically
from indexer.build import PERSISTENT_DATA_DIR, default_index_root
from indexer.errors import USER_FACING, ServiceError
from indexer.face import load_face_model
from indexer.gallery import describe_gallery, open_default_gallery
from indexer.siamese import load_head
from indexer.siamese.shipped import with_defaults
from indexer.verify import Mode, Verifier

log = logging.getLogger(__name__)


def _configured(name: str):
    return field(default_factory=lambda: getattr(config.settings(), name))


@dataclass
class Settings:
    """The app's choices: the TWINSIGHT_* settings (indexer/config.py), which the command line may override."""

    model: str = _configured("model")
    gallery: str | None = _configured("gallery")
    # Siamese heads or encoders (folders or hub ids). A mode none of them serves uses its shipped default (signature
    # mode: indexer/siamese/pretrained/signature-encoder; indexer.siamese.shipped).
    heads: list[str] = field(default_factory=lambda: list(config.settings().heads))
    store: str | None = _configured("store")  # hnsw (default) or milvus:URI (indexer/index/store.py)
    ef: int | None = _configured("ef")  # search-time candidate list: the index's own unless set
    # Writing to the shared gallery (what every visitor sees) needs this setting AND the token; without both,
    # a visitor's additions are their own (demo/session.py) and the sync button is hidden.
    shared_writes: bool = _configured("shared_writes")
    write_token: str = field(default_factory=lambda: config.settings().write_token or "")


settings = Settings()
_lock = threading.Lock()
_gallery: GalleryIndex | None = None
_verifier: Verifier | None = None
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"


def configure(model: str | None = None, gallery: str | None = None, heads: list[str] | None = None,
              store: str | None = None, ef: int | None = None) -> None:
    if model:
        settings.model = model
    if gallery:
        settings.gallery = gallery
    if heads:
        settings.heads = list(heads)
    if store:
        settings.store = store
    if ef:
        settings.ef = int(ef)


def shared_writes_enabled() -> bool:
    """True when the shared gallery may be written at all: the setting is on and a token is configured."""
    return settings.shared_writes and bool(settings.write_token)


def check_write_token(token: str | None) -> None:
    """Refuse a write to the shared gallery unless writes are enabled and `token` is the configured one."""
    if not shared_writes_enabled():
        raise gr.Error("Writing to the shared gallery is off on this app; your additions are your own. The operator "
                       "enables it with TWINSIGHT_SHARED_WRITES=1 and TWINSIGHT_WRITE_TOKEN.", title="Not allowed")
    if not hmac.compare_digest((token or "").encode(), settings.write_token.encode()):
        raise gr.Error("Wrong or missing write token for the shared gallery.", title="Not allowed")


def embedder() -> Embedder:
    """The one shared model (the registry loads it once per process)."""
    return load_embedder(settings.model)


def gallery(progress=None) -> GalleryIndex:
    """The shared gallery index: loaded from the on-disk cache, or built once on first use."""
    global _gallery
    with _lock:
        if _gallery is None:
            _gallery = open_default_gallery(embedder(), source=settings.gallery, progress=progress, show_progress=True,
                                            store=settings.store)
            if settings.ef:
                _gallery.ef = settings.ef
        return _gallery


def use_gallery(index: GalleryIndex | None) -> None:
    """Replace the shared gallery (tests inject small indexes; None reloads the configured one)."""
    global _gallery
    with _lock:
        _gallery = index


def verifier() -> Verifier:
    """The shared pairwise verifier: the shared model, the loaded Siamese heads, the face model."""
    global _verifier
    with _lock:
        if _verifier is None or _verifier.embedder is not embedder():
            _verifier = Verifier(embedder(), heads=with_defaults([load_head(head) for head in settings.heads]))
        return _verifier


def pairwise_examples() -> list[list[str]]:
    """[image A, image B, mode] rows from assets/examples (made by assets/make_examples.py)."""
    rows = []
    for mode, a, b in (
        (Mode.GENERAL, "cat-a.jpg", "cat-b.jpg"),
        (Mode.GENERAL, "cat-a.jpg", "coffee.jpg"),
        (Mode.FACE, "face-a.jpg", "face-b.jpg"),
        (Mode.SIGNATURE, "signature-a.png", "signature-b.png"),
        (Mode.SIGNATURE, "signature-a.png", "signature-other.png"),
    ):
        if (EXAMPLES_DIR / a).is_file() and (EXAMPLES_DIR / b).is_file():
            rows.append([str(EXAMPLES_DIR / a), str(EXAMPLES_DIR / b), mode.value])
    return rows


def example_files(*names: str) -> list[str]:
    """Paths of the project's own example files (assets/examples) that exist, in the order given."""
    return [str(EXAMPLES_DIR / name) for name in names if (EXAMPLES_DIR / name).is_file()]


def use_examples_cache() -> Path:
    """Point Gradio's example cache at a directory of this model and gallery: its cache is keyed only by the
    event's position in the page, so answers cached with another model would be shown as this one's."""
    index = gallery()
    key = hashlib.sha256(f"{embedder().name}|{index.path or index.source}".encode()).hexdigest()[:16]
    path = default_index_root().parent / "examples" / key
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(path)
    return path


def gallery_is_persistent() -> bool:
    """False on a Space whose gallery index lives outside its persistent storage (/data): lost on restart."""
    index = _gallery
    if not os.environ.get("SPACE_ID") or index is None or index.path is None:
        return True
    return PERSISTENT_DATA_DIR in index.path.resolve().parents


def warm_up() -> None:
    """Load everything at start-up, so the first user does not wait for it."""
    # The face model's worker process starts (~0.6 s) while this one loads the embedding model.
    face_start = threading.Thread(target=_start_face_model, name="face-model-start")
    face_start.start()
    log.info("model ready: %s", embedder())
    log.info("gallery ready: %s", describe_gallery(gallery()))
    for mode in Mode:  # self-calibrations run now, not in the first request
        threshold = verifier().threshold(mode)
        log.info("%s threshold %.3f: %s", mode.value, threshold.value, threshold.source)
    face_start.join()


def _start_face_model() -> None:
    try:
        log.info("face model ready: %s", load_face_model().name)
    except Exception as exc:  # face mode alone is out; a face request retries the load and shows the error
        log.warning("face mode is unavailable: %s", exc)


def status_markdown() -> str:
    model = embedder()
    lines = [f"**Model:** `{model.name}` ({model.dim}-d) on **{model.device.type}** in {str(model.dtype).replace('torch.', '')}"]
    if model.notice:
        lines.append(f"⚠️ {model.notice}")
    return "  \n".join(lines)


def image_input(**kwargs) -> gr.Image:
    """An image input (type="filepath") that hands the uploaded file to the callback as it is.

    gr.Image opens every upload with PIL before the callback runs, so an unreadable upload (empty, text, HEIC,
    a decompression bomb) became a generic "Error" with no message, and it converted modes itself (16-bit
    PNGs clipped to white). Here `indexer.load_image` reads the file, with its guards and its messages.
    (Not a gr.Image subclass: Gradio writes a .pyi stub next to any module that defines one.)
    """
    image = gr.Image(type="filepath", **kwargs)
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        if payload is None or payload.path is None or (payload.url or "").startswith("data:"):
            return gradio_preprocess(payload)  # nothing, or a pasted data URL: Gradio writes it to a file
        return str(payload.path)

    image.preprocess = preprocess
    return image


def _is_private_dir(path: Path) -> bool:
    """Create `path` (0700) if missing; True if it is then this user's own real directory (not a link) that
    nobody else can write or read, so no other local user can plant a link or files in what Gradio serves."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError:
        return False
    if not hasattr(os, "getuid"):  # Windows: the temp directory is the user's own
        return stat.S_ISDIR(info.st_mode)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077 == 0


def _private_output_dir() -> Path:
    """$TMPDIR/twinsight-outputs-UID when it is private, else a fresh mkdtemp. A fixed name, not one directory
    per process: a killed process runs no cleanup, and files named by content are reused across restarts."""
    path = Path(tempfile.gettempdir()) / f"twinsight-outputs-{getattr(os, 'getuid', lambda: 'user')()}"
    if _is_private_dir(path):
        return path
    log.warning("%s is not a private directory of this user; using a fresh one instead", path)
    return Path(tempfile.mkdtemp(prefix="twinsight-outputs-"))


def _serve_output_dir() -> None:
    """Make OUTPUT_DIR a static path, checked first: Gradio matches every returned file against each static path
    in turn, resolving both paths each time, and its own icons come first. At the front it saves two checks per
    file, in every answer (EfficientNet-Lite0 search one at a time: +15% requests/s). The reordering is skipped
    if Gradio's private list changes."""
    gr.set_static_paths([OUTPUT_DIR])
    try:
        from gradio.data_classes import _StaticFiles

        paths = _StaticFiles.all_paths
        paths.insert(0, paths.pop(paths.index(OUTPUT_DIR.resolve())))
    except (ImportError, AttributeError, ValueError):
        log.info("Gradio's static paths are not a list this version exposes; leaving their order")


# Images shown in the page. Gradio serves this directory as it is (a static path): its files are named by content
# and never rewritten, so Gradio need not hash and copy each into its cache on every answer (a search returns 8
# thumbnails: that was ~9% of the app's CPU under load, docs/dev/MEASUREMENT-NOTES.md). Only image_file writes here.
OUTPUT_DIR = _private_output_dir()
_serve_output_dir()


def image_file(image) -> str:
    """A PIL image shown in the page, as a file in OUTPUT_DIR written atomically (named by its content), which
    Gradio serves as it is. Not a PIL image handed to Gradio: it would encode it again on every answer, and it
    writes its cache in place (truncate, then write), so two users getting the same picture at once could have
    one download cut short mid-rewrite.
    """
    buffer = io.BytesIO()
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(buffer, format="JPEG", quality=90)  # ~0.2-0.4 ms at preview size; WebP took 7-14 ms per image
    data = buffer.getvalue()
    path = OUTPUT_DIR / f"{hashlib.sha256(data).hexdigest()[:32]}.jpg"
    if not path.is_file():
        if not _is_private_dir(OUTPUT_DIR):  # re-created if a tmp cleaner removed it, and checked again
            raise RuntimeError(f"{OUTPUT_DIR} is no longer a private directory of this user: restart the app.")
        write_atomically(path, lambda staging: staging.write_bytes(data))
    return str(path)


def user_error(exc: Exception) -> gr.Error:
    """Turn a library error into a friendly message in the page (never a traceback)."""
    return gr.Error(str(exc), title="Cannot do that")


def internal_error(exc: BaseException) -> gr.Error:
    """Our failure, never presented as the user's mistake: logged with a reference the page shows. A ServiceError's
    message is written for users (a worker stopped on this image, say), so it is shown; anything else (a bug) is not."""
    reference = uuid.uuid4().hex[:8]
    log.error("internal error, reference %s", reference, exc_info=exc)
    told = str(exc) if isinstance(exc, ServiceError) else "Something went wrong on our side and was logged."
    return gr.Error(f"{told} Try again; if it keeps happening, report reference {reference}.", title="Internal error")


def answers(callback):
    """Wrap a page or API callback: errors of the caller's input (indexer.errors.USER_FACING) are shown as they are,
    gr.Error passes through, anything else becomes `internal_error`."""
    @functools.wraps(callback)  # Gradio reads the signature and docstring (API inputs, gr.Progress) through it
    def run(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except gr.Error:
            raise
        except FRIENDLY_ERRORS as exc:
            raise user_error(exc) from None
        except Exception as exc:
            raise internal_error(exc) from None

    return run


def bounded_int(value, low: int, high: int, what: str) -> int:
    """An integer input from the page or the API, refused with a clear message outside [low, high]."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"{what} must be a whole number from {low} to {high}; got {str(value)[:40]!r}.") from None
    if not low <= number <= high:
        raise gr.Error(f"{what} must be from {low} to {high}; got {number if abs(number) < 10**12 else 'a huge number'}.")
    return number


FRIENDLY_ERRORS = USER_FACING  # shown to the user as they are; everything else is `internal_error`
