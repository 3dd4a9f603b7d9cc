"""Gallery tab: the most similar images in the indexed collection, by image or by text; add your own."""
from __future__ import annotations

import os
import threading

import gradio as gr

from indexer import GalleryIndex, SearchHit, load_image, sync_index
from indexer.index import EXACT_SEARCH_BELOW, MILVUS
from indexer.gallery import describe_gallery

from . import runtime

MAX_QUERY = 500
MAX_LABEL = 100
MAX_UPLOADS = 50
MAX_K = 32
MAX_FILTER_LABELS = 100


THUMBNAIL_SIDE = 384
_thumbnails: dict[tuple, str] = {}  # (index, item id) -> file; ids are never reused, so entries never go stale
_thumbnails_lock = threading.Lock()


def _thumbnail(index: GalleryIndex, item_id: int) -> str:
    """A display-size file of a gallery item, decoded and encoded once per process, not once per search."""
    key = (str(index.path) if index.path else id(index), index.model, item_id)
    with _thumbnails_lock:
        cached = _thumbnails.get(key)
    if cached is None or not os.path.isfile(cached):
        image = index.image(item_id)
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        cached = runtime.image_file(image)
        with _thumbnails_lock:
            _thumbnails[key] = cached
    return cached


def _results(index: GalleryIndex, hits: list[SearchHit], what: str) -> tuple[list[tuple], str, list[dict]]:
    """Gallery items, a summary, and the hits as data (id, score, label: no server paths) for the API and clicks."""
    items = [(_thumbnail(index, hit.id), f"{hit.label or 'unlabelled'} · {hit.score:.3f}") for hit in hits]
    data = [{"id": hit.id, "score": round(hit.score, 6), "label": hit.label} for hit in hits]
    return items, f"{len(hits)} nearest to {what}. Click a result to search with it.", data


def _filter(labels: list[str] | None) -> list[str] | None:
    if not labels:
        return None
    if isinstance(labels, str):
        labels = [labels]
    if len(labels) > MAX_FILTER_LABELS or any(len(str(label)) > MAX_LABEL for label in labels):
        raise gr.Error(f"Filter on at most {MAX_FILTER_LABELS} labels of at most {MAX_LABEL} characters each.")
    return [str(label) for label in labels]


def search(image: str | None, text: str, k: int = 8, labels: list[str] | None = None) -> tuple[list[tuple], str, list[dict]]:
    """Top-k gallery items for an image (preferred when both are given) or a text query."""
    text = (text or "").strip()
    if not image and not text:
        raise gr.Error("Drop an image or type a text query to search the gallery.")
    if len(text) > MAX_QUERY:
        raise gr.Error(f"The text query is over {MAX_QUERY} characters; shorten it.")
    k, label_filter = runtime.bounded_int(k, 1, MAX_K, "The number of results"), _filter(labels)
    index = runtime.gallery()
    try:
        query = {"image": image} if image else {"text": text}
        hits = index.search(k=k, label_filter=label_filter, **query)
    except runtime.FRIENDLY_ERRORS as exc:
        raise runtime.user_error(exc) from None
    return _results(index, hits, "the image" if image else f"“{text}”")


def similar(item_id: int, k: int = 8, labels: list[str] | None = None) -> tuple[list[tuple], str, list[dict]]:
    """Search with a gallery item (by id) as the query."""
    item_id = runtime.bounded_int(item_id, 0, 2**62, "The gallery item id")
    k, label_filter = runtime.bounded_int(k, 1, MAX_K, "The number of results"), _filter(labels)
    index = runtime.gallery()
    try:
        hits = index.similar(item_id, k=k, label_filter=label_filter)
    except KeyError:
        raise gr.Error(f"Item {item_id} is not in the gallery (it may have been deleted); search again.") from None
    return _results(index, hits, f"gallery item {item_id}")


def select_result(shown: list[dict] | None, k: int, labels: list[str] | None, event: gr.SelectData):
    """A click on a result searches with that result."""
    if not shown or event.index is None or event.index >= len(shown):
        raise gr.Error("Search first, then click a result.")
    return similar(shown[event.index]["id"], k, labels)


def add_images(files: list[str] | None, label: str = "") -> tuple[str, gr.Dropdown]:
    """Embed uploaded images into the gallery (searchable at once) and commit them to disk before answering."""
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
    index = runtime.gallery()
    ids = index.add(images, labels=[label] * len(images))
    index.commit()  # durable before we answer: appended to the journal (or a full, atomic save now and then)
    message = f"Added {len(ids)} image(s) (ids {ids[0]}–{ids[-1]}) as “{label or 'unlabelled'}”. {facts()}"
    if skipped:
        message += "  \nSkipped: " + " ".join(skipped)
    return message, gr.Dropdown(choices=index.labels())


def sync_gallery(progress=gr.Progress()) -> str:
    """Embed what the gallery's dataset or folder gained since it was indexed (resumable, saved at the end)."""
    index = runtime.gallery()
    try:
        sync_index(index, progress=lambda done, total: progress((done, total), desc="Embedding new images", unit="images"))
    except runtime.FRIENDLY_ERRORS as exc:
        raise runtime.user_error(exc) from None
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


def build() -> gr.Blocks:
    index = runtime.gallery()
    with gr.Blocks() as page:
        index_facts = gr.Markdown(facts())
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
                labels = gr.Dropdown(index.labels(), multiselect=True, label="Only these labels (optional)")
                button = gr.Button("Search", variant="primary")
                with gr.Accordion("Add to gallery", open=False):
                    files = gr.File(file_count="multiple", file_types=["image"], label="Images to add")
                    new_label = gr.Textbox(label="Label (optional)", max_length=MAX_LABEL)
                    add_button = gr.Button("Add to gallery")
                    added = gr.Markdown()
                    sync_button = gr.Button("Sync with the gallery's dataset or folder", size="sm")
            with gr.Column(scale=2):
                results = gr.Gallery(label="Most similar", columns=4, height="auto", allow_preview=False)
                summary = gr.Markdown()
                shown = gr.JSON(visible=False, label="Hits")  # the results on screen, as data
                item_id = gr.Number(visible=False, precision=0)  # API-only: search with a gallery item
                similar_button = gr.Button(visible=False)
        outputs = [results, summary, shown]
        button.click(search, [image, text, k, labels], outputs, api_name="search")
        text.submit(search, [image, text, k, labels], outputs, api_name="search_text")
        results.select(select_result, [shown, k, labels], outputs, api_name="select_result", api_visibility="undocumented")
        similar_button.click(similar, [item_id, k, labels], outputs, api_name="similar")
        sync_button.click(sync_gallery, None, added, api_name="sync_gallery").then(facts, None, index_facts)
        add_button.click(add_images, [files, new_label], [added, labels], api_name="add_to_gallery").then(
            facts, None, index_facts, api_name="gallery_facts"
        )
    return page


if __name__ == "__main__":
    runtime.warm_up()
    build().launch()
