"""Siamese verification: a shared-weight backbone plus a trained projection head.

    python -m indexer.siamese train --dataset DIR_OR_ID --loss contrastive|triplet|bce --out DIR
    python -m indexer.siamese eval --mode general|face|signature [--head DIR] (--pairs CSV --images DIR | --oneshot DIR)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {"SiameseHead": ".head", "load_head": ".head"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .head import SiameseHead, load_head
