"""Gallery tab: the most similar images in the indexed collection, by image or by text; add your own."""
from __future__ import annotations

import os
import random

import gradio as gr

from indexer import GalleryIndex, load_image, sync_index
from indexer.config import settings
from indexer.index import EXACT_SEARCH_BELOW, MILVUS
from indexer.gallery import describe_gallery
from indexer.lru import LruCache

from . import runtime
from .session import MAX_SESSION_ITEMS, SESSION_TTL_SECONDS, Found, labels_of, new_session_index, room_left, search_both

MAX_QUERY = 500
MAX_LABEL = 100
MAX_UPLOADS = 50
MAX_K = 32
MAX_FILTER_LABELS = 100


THUMBNAIL_SIDE = 384
# (index, item id) -> display file. Ids are never reused, so entries never go stale; bounded, so a large gallery
# browsed for days does not grow the process without limit (each entry is a path string, the file is on disk).
_thumbnails: LruCache[tuple, str] = LruCache(settings().thumbnail_cache)
BROWSE_COUNT = 8  # as the results slider starts


def _index_key(index: GalleryIndex):
    return str(index.path) if index.path else index.source.get("session_id") or id(index)


def _thumbnail(index: GalleryIndex, item_id: int) -> str:
    """A display-size file of a gallery item, decoded and encoded once per process, not once per search."""
    key = (_index_key(index), index.model, item_id)
    cached = _thumbnails.get(key)
    if cached is None or not os.path.isfile(cached):
        image = index.image(item_id)
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        cached = runtime.image_file(image)
        _thumbnails.put(key, cached)
    return cached


def _display_copy(image):
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return small


def _results(found: list[Found], what: str) -> tuple[list[tuple], str, list[dict]]:
    """Gallery items, a summary, and the hits as data (id, score, label, yours: no server paths)."""
    items = [(_thumbnail(f.index, f.hit.id), f"{f.hit.label or 'unlabelled'} · {f.hit.score:.3f}" + (" · yours" if f.yours else ""))
             for f in found]
    return items, f"{len(found)} nearest to {what}. Click a result to search with it.", [f.as_data() for f in found]


def _filter(labels: list[str] | None) -> list[str] | None:
    if not labels:
        return None
    if isinstance(labels, str):
        labels = [labels]
    if len(labels) > MAX_FILTER_LABELS or any(len(str(label)) > MAX_LABEL for label in labels):
        raise gr.Error(f"Filter on at most {MAX_FILTER_LABELS} labels of at most {MAX_LABEL} characters each.")
    return [str(label) for label in labels]


@runtime.answers
def search(image: str | None = None, text: str | None = None, k: int = 8, labels: list[str] | None = None,
           mine: GalleryIndex | None = None) -> tuple[list[tuple], str, list[dict]]:
    """The gallery images most similar to an image (preferred when both are given) or to a text query.

    Args:
        image: the query image.
        text: a text query (CLIP models), used when no image is given.
        k: how many results, 1 to 32 (default 8).
        labels: only items with one of these labels (default: all).
    """
    text = (text or "").strip()
    if not image and not text:
        raise gr.Error("Drop an image or type a text query to search the gallery.")
    if len(text) > MAX_QUERY:
        raise gr.Error(f"The text query is over {MAX_QUERY} characters; shorten it.")
    k, label_filter = runtime.bounded_int(k, 1, MAX_K, "The number of results"), _filter(labels)
    query = {"image": image} if image else {"text": text}
    found = search_both(runtime.gallery(), mine, k, label_filter, **query)
    return _results(found, "the image" if image else f"“{text}”")


def _similar(item_id, k, labels, mine: GalleryIndex | None, yours: bool) -> list[Found]:
    item_id = runtime.bounded_int(item_id, 0, 2**62, "The gallery item id")
    k, label_filter = runtime.bounded_int(k, 1, MAX_K, "The number of results"), _filter(labels)
    shared = runtime.gallery()
    owner = mine if yours else shared
    if owner is None or item_id not in owner:
        raise gr.Error(f"Item {item_id} is not in the gallery (it may have been deleted); search again.")
    return search_both(shared, mine, k, label_filter, vector=owner.vectors([item_id])[0])


@runtime.answers
def similar(item_id: int, k: int = 8, labels: list[str] | None = None) -> tuple[str, list[dict]]:
    """Search the shared gallery with one of its items (an id from a search's hits) as the query.

    Args:
        item_id: the id of a gallery item, as returned in the hits of /search.
        k: how many results, 1 to 32 (default 8).
        labels: only items with one of these labels (default: all).

    Returns:
        A summary line, and the hits as [{id, score, label, yours}], best first (the item itself first).
    """
    found = _similar(item_id, k, labels, None, False)
    return f"{len(found)} nearest to gallery item {int(item_id)}.", [f.as_data() for f in found]


@runtime.answers
def select_result(shown: list[dict] | None, k: int, labels: list[str] | None, mine: GalleryIndex | None,
                  event: gr.SelectData):
    """A click on a result searches with that result (one of the shared gallery's, or one of yours)."""
    if not shown or event.index is None or event.index >= len(shown):
        raise gr.Error("Search first, then click a result.")
    hit = shown[event.index]
    return _results(_similar(hit["id"], k, labels, mine, bool(hit.get("yours"))), f"gallery item {hit['id']}")


@runtime.answers
def browse(label: str | None = None, count: int = BROWSE_COUNT, mine: GalleryIndex | None = None):
    """A page of gallery items before any search: a random sample, or items with one label.

    Args:
        label: only items with this label (default: any label, a random sample).
        count: how many items, 1 to 32 (default 8).
    """
    count = runtime.bounded_int(count, 1, MAX_K, "The number of items")
    label = (label or "").strip() or None
    pool = [(index, item_id, index is mine) for index in (runtime.gallery(), mine) if index is not None
            for item_id in index.ids]
    if label:
        pool = [entry for entry in pool if entry[0].get(entry[1]).label == label]
    chosen = random.sample(pool, min(count, len(pool)))
    items, data = [], []
    for index, item_id, yours in chosen:
        item_label = index.get(item_id).label
        items.append((_thumbnail(index, item_id), (item_label or "unlabelled") + (" · yours" if yours else "")))
        data.append({"id": item_id, "label": item_label, "yours": yours})
    what = f"labelled “{label}”" if label else "at random"
    return items, f"{len(chosen)} gallery items {what}. Click one to search with it.", data


def _read_uploads(files: list[str] | None, label: str | None):
    """(decoded images, label or None, messages for the files skipped); refuses what cannot be added at all."""
    if not files:
        raise gr.Error("Choose one or more image files to add.")
    if len(files) > MAX_UPLOADS:
        raise gr.Error(f"{len(files)} files chosen; add at most {MAX_UPLOADS} at a time.")
    label = (label or "").strip() or None
    if label and len(label) > MAX_LABEL:
        raise gr.Error(f"The label is over {MAX_LABEL} characters; shorten it.")
    images, skipped = [], []
    for path in files:
        try:
            images.append(load_image(path))
        except runtime.FRIENDLY_ERRORS as exc:
            skipped.append(str(exc))
    if not images:
        raise gr.Error("None of the files could be read: " + " ".join(skipped))
    return images, label, skipped


def _added(ids: list[int], label: str | None, skipped: list[str], where: str) -> str:
    message = f"Added {len(ids)} image(s) (ids {ids[0]}–{ids[-1]}) as “{label or 'unlabelled'}” {where}. {facts()}"
    return message + ("  \nSkipped: " + " ".join(skipped) if skipped else "")


def add_images(files: list[str] | None, label: str = "") -> tuple[str, gr.Dropdown]:
    """Embed uploaded images into the SHARED gallery (searchable at once, by everyone) and commit them to disk
    before answering. Callers check the permission first (add_to_gallery does)."""
    images, label, skipped = _read_uploads(files, label)
    index = runtime.gallery()
    ids = index.add(images, labels=[label] * len(images))
    index.commit()  # durable before we answer: appended to the journal (or a full, atomic save now and then)
    return _added(ids, label, skipped, "to the shared gallery"), gr.Dropdown(choices=index.labels())


def add_to_session(files: list[str] | None, label: str | None, mine: GalleryIndex | None):
    """Embed uploaded images into the visitor's own additions: searched with the shared gallery, seen by
    nobody else, gone when the session ends. Only a display-size copy of each image is kept in memory."""
    images, label, skipped = _read_uploads(files, label)
    shared = runtime.gallery()
    mine = mine if mine is not None else new_session_index(shared)
    if len(images) > room_left(mine):
        raise gr.Error(f"Your additions are limited to {MAX_SESSION_ITEMS} images per session; "
                       f"{room_left(mine)} more fit. Reload the page to start over.")
    vectors = shared.embedder.encode_images(images)
    # Display copies, not the decoded uploads: those hold the shared decode budget until they are freed.
    ids = mine.add_vectors(vectors, [label] * len(images), [""] * len(images), _images=[_display_copy(i) for i in images])
    message = _added(ids, label, skipped, "to your own additions (only you see them; they go when you close the page)")
    return message, gr.Dropdown(choices=labels_of(shared, mine)), mine


@runtime.answers
def add_to_gallery(files: list[str] | None, label: str | None = None, mine: GalleryIndex | None = None,
                   shared: bool = False, token: str | None = None):
    """Add images to the gallery: to your own additions (default), or to the shared gallery with the write token.

    Args:
        files: the image files to add (at most 50).
        label: a label for all of them (optional).
        shared: add to the shared gallery that every visitor sees (needs writes enabled and the token).
        token: the shared gallery's write token (TWINSIGHT_WRITE_TOKEN).
    """
    if shared:
        runtime.check_write_token(token)
        message, labels = add_images(files, label or "")
        return message, labels, mine
    return add_to_session(files, label, mine)


@runtime.answers
def sync_gallery(token: str | None = None, progress=gr.Progress()) -> str:
    """Embed what the gallery's dataset or folder gained since it was indexed (resumable, saved at the end).
    A write to the shared gallery: needs the write token."""
    runtime.check_write_token(token)
    index = runtime.gallery()
    sync_index(index, progress=lambda done, total: progress((done, total), desc="Embedding new images", unit="images"))
    report = index.build_report
    return f"Synced: {report.embedded} new image(s) embedded, {report.skipped} unreadable skipped. {facts()}"


def facts() -> str:
    index = runtime.gallery()
    spec = index.spec  # where the vectors live
    if spec.kind == MILVUS:
        metric = f"cosine similarity (Milvus, {spec.uri})"
    else:
        metric = f"cosine similarity (hnswlib, ef {index.ef})" if len(index) >= EXACT_SEARCH_BELOW else "cosine similarity (exact)"
    return f"**Gallery:** {describe_gallery(index)} · **model:** `{index.model}` · **metric:** {metric}"


def additions_notice() -> str:
    """Say plainly what an addition is and whether it lasts."""
    notice = "Images you add are **yours alone**: searched with the shared gallery, seen by nobody else, gone when you close the page."
    if runtime.shared_writes_enabled():
        notice += " With the write token you can add to the shared gallery instead"
        notice += "." if runtime.gallery_is_persistent() else (
            ", but this app has no persistent storage: **shared additions are lost when it restarts**.")
    return notice


def build() -> gr.Blocks:
    index = runtime.gallery()
    writes = runtime.shared_writes_enabled()
    with gr.Blocks() as page:
        index_facts = gr.Markdown(facts())
        # This visitor's own additions (a small in-memory index). Gradio drops it when the page is closed or
        # reloaded; the time limit also frees those of API clients that never disconnect.
        mine = gr.State(None, time_to_live=SESSION_TTL_SECONDS)
        with gr.Row():
            with gr.Column(scale=1):
                image = runtime.image_input(label="Query image", sources=["upload", "clipboard", "webcam"])
                supports_text = runtime.embedder().supports_text
                text = gr.Textbox(
                    label="…or a text query" if supports_text else "Text query (needs a CLIP model)",
                    placeholder="a cat" if supports_text else "unavailable: the loaded model has no text tower",
                    max_length=MAX_QUERY, interactive=supports_text,
                )
                k = gr.Slider(1, MAX_K, value=8, step=1, label="Results (top-k)")
                # Custom values: labels added since this page loaded (by the shared gallery's writers) are valid too.
                labels = gr.Dropdown(index.labels(), multiselect=True, label="Only these labels (optional)", allow_custom_value=True)
                button = gr.Button("Search", variant="primary")
                with gr.Accordion("Browse the gallery", open=True):
                    browse_label = gr.Dropdown(index.labels(), value=None, label="Label (optional; default: at random)",
                                               allow_custom_value=True)
                    browse_button = gr.Button("Show gallery items")
                with gr.Accordion("Add to gallery", open=False):
                    gr.Markdown(additions_notice())
                    files = gr.File(file_count="multiple", file_types=["image"], label="Images to add")
                    new_label = gr.Textbox(label="Label (optional)", max_length=MAX_LABEL)
                    to_shared = gr.Checkbox(False, label="Add to the shared gallery (every visitor sees it)", visible=writes)
                    token = gr.Textbox(label="Write token", type="password", visible=writes)
                    add_button = gr.Button("Add to gallery")
                    added = gr.Markdown()
                    sync_button = gr.Button("Sync with the gallery's dataset or folder", size="sm", visible=writes)
            with gr.Column(scale=2):
                results = gr.Gallery(label="Most similar", columns=4, height="auto", allow_preview=False)
                summary = gr.Markdown()
                shown = gr.JSON(visible=False, label="Hits")  # the results on screen, as data
        outputs = [results, summary, shown]
        examples = runtime.example_files("cat-a.jpg", "coffee.jpg", "face-a.jpg")
        if examples:
            gr.Examples([[path] for path in examples], [image], outputs, fn=search, cache_examples=True,
                        cache_mode="lazy", label="Examples: one click shows the answer")
        button.click(search, [image, text, k, labels, mine], outputs, api_name="search")
        text.submit(search, [image, text, k, labels, mine], outputs, api_name="search_text", api_visibility="undocumented")
        results.select(select_result, [shown, k, labels, mine], outputs, api_name="select_result", api_visibility="undocumented")
        browse_button.click(browse, [browse_label, k, mine], outputs, api_name="browse")
        gr.api(similar, api_name="similar")
        sync_button.click(sync_gallery, token, added, api_name="sync_gallery", api_visibility="private",
                          concurrency_limit=1, concurrency_id="sync_gallery").then(
                              facts, None, index_facts, api_name="sync_facts", api_visibility="private")
        add_button.click(add_to_gallery, [files, new_label, mine, to_shared, token], [added, labels, mine],
                         api_name="add_to_gallery").then(facts, None, index_facts, api_name="gallery_facts",
                                                          api_visibility="undocumented")
    return page


if __name__ == "__main__":
    runtime.warm_up()
    build().launch()
