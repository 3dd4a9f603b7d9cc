"""Every TWINSIGHT_* setting in one place: read and validated together, once per change of the environment.

    from indexer.config import settings
    settings().face_timeout          # seconds, validated

Each field of `Settings` names its variable, its parser and its meaning; the README's settings table is this
module's `markdown_table()` (a test keeps the two equal). A bad value raises ConfigError naming the variable,
the value and what to set instead, the first time any setting is read: a typo in one variable is reported at
start-up, not deep inside the first request that happens to read it.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass, field
from typing import Callable

from .errors import ConfigError

PREFIX = "TWINSIGHT_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _text(value: str) -> str:
    return value


# Each parser raises ValueError(what a valid value is); from_environ adds the variable's name and value.
def _whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.replace("_", ""))
        except ValueError:
            number = None
        if number is None or number < minimum or (maximum is not None and number > maximum):
            raise ValueError(f"a whole number of at least {minimum}" if maximum is None
                             else f"a whole number from {minimum} to {maximum}")
        return number

    return parse


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0:  # also refuses nan
        raise ValueError("a positive number")
    return number


def _switch(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}")


def _choice(*values: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in values:
            raise ValueError(f"one of {', '.join(values)}")
        return value.lower()

    return parse


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())



def _var(name: str, parse: Callable[[str], object], default: object, meaning: str, shown: str | None = None):
    """A field read from $TWINSIGHT_<name>; `shown` is how the README states the default when not `default`."""
    return field(default=default, metadata={"env": PREFIX + name, "parse": parse, "meaning": meaning,
                                            "shown": shown if shown is not None else str(default)})


@dataclass(frozen=True)
class Settings:
    """The validated settings. None means "automatic": the code that uses it decides, as its meaning says."""

    # The app
    model: str = _var("MODEL", _text, "auto", "model spec the app loads (README, Models)")
    gallery: str | None = _var("GALLERY", _text, None, "gallery to search: hub id, saved dataset, parquet or folder",
                               "the default hub gallery, else built-in photos")
    heads: tuple[str, ...] = _var("HEADS", _names, (), "Siamese heads/encoders for the pairwise tab, comma-separated "
                                  "folders or hub ids", "none")
    store: str | None = _var("STORE", _text, None, "where gallery vectors live: `hnsw` or `milvus:URI[#COLLECTION]`", "hnsw")
    ef: int | None = _var("EF", _whole(1), None, "hnsw search candidate list: higher = better recall, slower",
                          "the index's tuned ef (recall@10 0.98, at least 96)")
    scan_copy: str = _var("SCAN_COPY", _choice("auto", "mapped", "memory"), "auto", "the float16 copy exact and "
                          "filtered searches scan: `mapped` from the saved index (page cache, not the app's memory), "
                          "`memory` read into RAM (+0.5x the vectors; for slow or network disks)",
                          "mapped, but memory on Windows (a mapped file cannot be replaced there)")
    index_dir: str | None = _var("INDEX_DIR", _text, None, "where built indexes and calibrations are cached",
                                 "/data/twinsight/indexes where /data is writable (Spaces storage), else "
                                 "~/.cache/twinsight/indexes")
    gallery_size: int = _var("GALLERY_SIZE", _whole(1), 2000, "rows of the default hub gallery streamed and indexed")
    thumbnail_cache: int = _var("THUMBNAIL_CACHE", _whole(1), 4096, "gallery thumbnails kept in memory (least recently "
                                "used dropped first)")
    session_items: int = _var("SESSION_ITEMS", _whole(1), 50, "images one visitor may add to their own additions")
    session_ttl: int = _var("SESSION_TTL", _whole(1), 7200, "seconds a visitor's additions are kept after their last "
                            "one when the page is never closed")
    default_heads: bool = _var("DEFAULT_HEADS", _switch, True, "signature mode uses the shipped signature encoder "
                               "when no head or encoder of yours serves it (0: the image model's features)", "1")
    shared_writes: bool = _var("SHARED_WRITES", _switch, False, "allow writes to the shared gallery (with the token "
                               "below); otherwise additions are each visitor's own", "0")
    write_token: str | None = _var("WRITE_TOKEN", _text, None, "the token shared-gallery writes and /sync_gallery "
                                   "must give", "none: shared writes refused")
    mcp: bool = _var("MCP", _switch, False, "also serve the endpoints as an MCP server (`pip install 'gradio[mcp]'`)", "0")
    concurrency: int = _var("CONCURRENCY", _whole(1), 16, "concurrent events per app function")
    queue_size: int = _var("QUEUE_SIZE", _whole(1), 64, "requests waiting beyond this get 'queue is full'")
    max_upload: str = _var("MAX_UPLOAD", _text, "20mb", "largest upload Gradio accepts")
    # Models
    device: str | None = _var("DEVICE", _text, None, "torch device", "cuda, then mps, then cpu")
    precision: str = _var("PRECISION", _choice("auto", "fp32", "bf16", "fp16", "int8"), "auto",
                          "model weights' precision (auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32; "
                          "int8: the image tower's Linear layers in int8 on CPUs with AMX-int8 or VNNI)")
    model_workers: int | None = _var("MODEL_WORKERS", _whole(1), None, "model streams run at once",
                                     "2 on a CPU, 1 on a GPU")
    max_batch: int | None = _var("MAX_BATCH", _whole(1), None, "rows in one merged forward; 1 turns merging off",
                                 "64 or the model's batch size")
    trace: bool = _var("TRACE", _switch, True, "run CPU forwards as checked TorchScript traces", "1")
    channels_last: bool = _var("CHANNELS_LAST", _switch, True, "channels_last memory layout for convolutional nets", "1")
    trust_remote_code: bool = _var("TRUST_REMOTE_CODE", _switch, False, "let `hf:` models run their own code", "0")
    calibration_cache: bool = _var("CALIBRATION_CACHE", _switch, True,
                                   "keep self-calibrated thresholds on disk between starts", "1")
    # Images and faces
    max_pixels: int = _var("MAX_PIXELS", _whole(1), 64_000_000, "largest image accepted, in pixels (decompression-bomb guard)",
                           "64000000")
    decode_budget_mb: int = _var("DECODE_BUDGET_MB", _whole(1), 1024, "decoded pixels alive at once, all requests together (MB)")
    face_timeout: float = _var("FACE_TIMEOUT", _number, 60.0, "seconds allowed per image in face mode", "60")
    face_worker: bool = _var("FACE_WORKER", _switch, True, "run dlib in worker processes (0: in the app's process)", "1")
    face_workers: int | None = _var("FACE_WORKERS", _whole(1, 16), None, "dlib worker processes: the images of a "
                                    "pair are detected at once, one per worker (~55 MB each; ignored when "
                                    "TWINSIGHT_FACE_WORKER=0)", "2, or 1 on a 1-core CPU")
    face_jitters: int = _var("FACE_JITTERS", _whole(1, 32), 2, "CNN passes averaged per compared face: 1 the aligned "
                             "chip alone, 2 adds its mirror image, more add seeded shifts and rotations")

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> "Settings":
        """Parse every variable in `environ` (default os.environ); ConfigError on the first bad one."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            name, parse = f.metadata["env"], f.metadata["parse"]
            text = environ.get(name, "").strip()
            if not text:
                continue  # unset or empty: the default
            try:
                values[f.name] = parse(text)
            except ValueError as exc:
                raise ConfigError(f"{name}={text!r} is not valid: set it to {exc}, or unset it for the default "
                                  f"({f.metadata['shown']}).") from None
        return cls(**values)


_lock = threading.Lock()
_cached: tuple[tuple, Settings] | None = None


def settings() -> Settings:
    """The current settings, parsed once per change of the TWINSIGHT_* variables (tests may change them)."""
    global _cached
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(PREFIX)))
    cached = _cached
    if cached is not None and cached[0] == key:
        return cached[1]
    with _lock:
        _cached = (key, Settings.from_environ())
        return _cached[1]


def markdown_table() -> str:
    """The README's table of every variable: name, default, meaning."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        rows.append(f"| `{f.metadata['env']}` | {f.metadata['shown']} | {f.metadata['meaning']} |")
    return "\n".join(rows)
