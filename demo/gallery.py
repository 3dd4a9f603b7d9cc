"""Gallery tab: the most similar images in the indexed collection, by image or by text."""
from __future__ import annotations

import gradio as gr

from . import runtime

MAX_QUERY = 500


def search(image: str | None, text: str, k: int = 8) -> tuple[list[tuple], str]:
    """Top-k gallery items for an image or a text query, as (image, caption) pairs."""
    text = (text or "").strip()
    if not image and not text:
        raise gr.Error("Drop an image or type a text query to search the gallery.")
    if len(text) > MAX_QUERY:
        raise gr.Error(f"The text query is over {MAX_QUERY} characters; shorten it.")
    index = runtime.gallery()
    try:
        hits = index.search(image=image, k=int(k)) if image else index.search(text=text, k=int(k))
    except runtime.FRIENDLY_ERRORS as exc:
        raise runtime.user_error(exc) from None
    items = [(index.image(hit.id), f"{hit.label or 'unlabelled'} · {hit.score:.3f}") for hit in hits]
    query = "the image" if image else f"“{text}”"
    return items, f"{len(items)} nearest to {query} in {index.describe()}"


def build() -> gr.Blocks:
    with gr.Blocks() as page:
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="Query image")
                text = gr.Textbox(label="…or a text query", placeholder="a cat", max_length=MAX_QUERY,
                                  interactive=runtime.embedder().supports_text)
                k = gr.Slider(1, 32, value=8, step=1, label="Results")
                button = gr.Button("Search", variant="primary")
            with gr.Column(scale=2):
                results = gr.Gallery(label="Most similar", columns=4, height="auto")
                summary = gr.Markdown()
        button.click(search, [image, text, k], [results, summary], api_name="search")
    return page


if __name__ == "__main__":
    build().launch()
