"""The encoders that ship with Twinsight (indexer/siamese/pretrained/), and which one a mode uses when the user names none."""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import settings

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "pretrained"  # package data: installed with the package
SHIPPED = {
    "signature": MODELS_DIR / "signature-encoder",  # trained on SigComp2011 (research use; see its card)
    "handwriting": MODELS_DIR / "omniglot-encoder",  # trained on Omniglot's background set (MIT)
}
DEFAULT_FOR_MODE = {"signature": "signature"}


def default_head(mode: str):
    """The shipped encoder `mode` uses by default, or None (no default for the mode, or it is missing from this
    install, or TWINSIGHT_DEFAULT_HEADS=0)."""
    from .head import load_head

    name = DEFAULT_FOR_MODE.get(str(getattr(mode, "value", mode)))
    if name is None or not settings().default_heads:
        return None
    folder = SHIPPED[name]
    if not (folder / "card.json").is_file():
        log.warning("the shipped %s encoder is missing from %s; %s mode uses the image model's features", name, folder, mode)
        return None
    return load_head(folder)


def with_defaults(heads: list) -> list:
    """`heads` plus the shipped default of every mode none of them serves (a user's own head wins)."""
    served = {head.mode for head in heads}
    defaults = [default_head(mode) for mode in DEFAULT_FOR_MODE if mode not in served]
    return list(heads) + [head for head in defaults if head is not None]
