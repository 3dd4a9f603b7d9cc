"""Pairwise tab: two images, one shared encoder, a similarity score and a match verdict."""
from __future__ import annotations

import gradio as gr
import numpy as np

from . import runtime

DEFAULT_THRESHOLD = 0.5


def compare(image_a: str | None, image_b: str | None, threshold: float = DEFAULT_THRESHOLD) -> tuple[float, str]:
    """Cosine similarity of the two images' embeddings and a verdict at `threshold`."""
    if not image_a or not image_b:
        raise gr.Error("Drop an image in both boxes to compare them.")
    try:
        a, b = runtime.embedder().encode_images([image_a, image_b])
    except runtime.FRIENDLY_ERRORS as exc:
        raise runtime.user_error(exc) from None
    score = float(np.clip(a @ b, -1.0, 1.0))
    verdict = "match" if score >= threshold else "no match"
    return round(score, 4), f"**{verdict}** (cosine similarity {score:.3f}, threshold {threshold:.2f})"


def build() -> gr.Blocks:
    with gr.Blocks() as page:
        with gr.Row():
            image_a = gr.Image(type="filepath", label="Image A")
            image_b = gr.Image(type="filepath", label="Image B")
        threshold = gr.Slider(0.0, 1.0, value=DEFAULT_THRESHOLD, step=0.01, label="Match threshold (cosine)")
        button = gr.Button("Compare", variant="primary")
        with gr.Row():
            score = gr.Number(label="Similarity score", precision=4)
            verdict = gr.Markdown()
        button.click(compare, [image_a, image_b, threshold], [score, verdict], api_name="compare")
    return page


if __name__ == "__main__":
    build().launch()
