"""Siamese verification: ink encoders trained end to end (indexer.siamese.encoder), or a projection head on a
frozen shared backbone (indexer.siamese.head). `load_head(DIR)` loads either, by its card's format.

    python -m indexer.siamese train --dataset DIR --mode signature --out DIR          # an ink encoder
    python -m indexer.siamese train --dataset DIR_OR_ID --mode general --loss triplet --out DIR   # a head
    python -m indexer.siamese eval --mode general|face|signature [--head DIR|none] (--pairs CSV --images DIR | --oneshot DIR)

The trainers (encoder_train, train) are kept apart from what the app imports (encoder, head, shipped).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {"SiameseEncoder": ".encoder", "SiameseHead": ".head", "load_head": ".head"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .encoder import SiameseEncoder
    from .head import SiameseHead, load_head
