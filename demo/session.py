"""A visitor's own gallery additions: searched beside the shared gallery, never written to it, gone with the session.

A public Space must not let one visitor put labelled images in front of every other visitor. So an upload goes
into a small in-memory index that lives in the visitor's gr.State (Gradio drops it when the page is closed);
writing to the shared gallery needs the explicit setting and the write token (runtime.shared_writes_allowed).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from indexer import GalleryIndex, SearchHit
from indexer.config import settings

# A session's additions stay in memory, each with a display copy of at most 384x384 px (~0.44 MB decoded):
# this bounds what one visitor holds (~22 MB), and the time limit how long after their last addition.
MAX_SESSION_ITEMS = settings().session_items
SESSION_TTL_SECONDS = settings().session_ttl


@dataclass(frozen=True)
class Found:
    """A search hit and the index it came from (the shared gallery, or the visitor's own additions)."""

    index: GalleryIndex
    hit: SearchHit
    yours: bool

    def as_data(self) -> dict:
        """What the page and the API receive: no server paths."""
        return {"id": self.hit.id, "score": round(self.hit.score, 6), "label": self.hit.label, "yours": self.yours}


def new_session_index(shared: GalleryIndex) -> GalleryIndex:
    """An empty in-memory index on the shared gallery's model: the visitor's own additions go here."""
    # A unique id, not id(): caches keyed by it must never show one visitor's image to a later session.
    return GalleryIndex(shared.dim, shared.model, embedder=shared.embedder,
                        source={"kind": "session", "session_id": uuid.uuid4().hex})


def room_left(mine: GalleryIndex | None) -> int:
    return MAX_SESSION_ITEMS - (len(mine) if mine is not None else 0)


def search_both(shared: GalleryIndex, mine: GalleryIndex | None, k: int, label_filter=None, **query) -> list[Found]:
    """The k best of the shared gallery and the visitor's additions together, best first. The query is
    embedded once (by the shared index) and both indexes are searched with that vector."""
    if "vector" not in query:
        query = {"vector": shared.embed_query(**query)}
    found = [Found(shared, hit, False) for hit in shared.search(k=k, label_filter=label_filter, **query)]
    if mine is not None and len(mine):
        found += [Found(mine, hit, True) for hit in mine.search(k=k, label_filter=label_filter, **query)]
    return sorted(found, key=lambda f: f.hit.score, reverse=True)[:k]


def labels_of(shared: GalleryIndex, mine: GalleryIndex | None) -> list[str]:
    """The labels a visitor can filter on: the shared gallery's and their own."""
    return sorted(set(shared.labels()) | set(mine.labels() if mine is not None else ()))
