"""Siamese verification: a shared-weight backbone plus a trained projection head.

    python -m indexer.siamese train --dataset DIR_OR_ID --loss contrastive|triplet|bce --out DIR
    python -m indexer.siamese eval --mode general|face|signature [--head DIR] (--pairs CSV --images DIR | --oneshot DIR)
"""
from .head import SiameseHead, load_head

__all__ = ["SiameseHead", "load_head"]
