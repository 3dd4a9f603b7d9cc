"""Classification tab: top labels for an image, from zero-shot CLIP, the model's own head, or gallery votes."""
from __future__ import annotations

import enum

import gradio as gr

from indexer.errors import UserInputError
from indexer.knn import vote
from indexer.models.base import DEFAULT_PROMPT_TEMPLATE

from . import runtime

DEFAULT_LABELS = "cat, dog, bird, car, airplane, rocket, coffee, person, flower, building"
MAX_LABELS = 100
MAX_TEXT = 2000
MAX_TEMPLATE = 200
MAX_TOP_K = 10


class Source(str, enum.Enum):
    """Where the labels come from. The values are what the API takes; the labels are what the page shows."""

    ZERO_SHOT = "zero_shot"
    HEAD = "head"
    GALLERY = "gallery"

    @property
    def label(self) -> str:
        return SOURCE_LABELS[self]

    @classmethod
    def parse(cls, value: str) -> "Source":
        """A source from its value, or a clear error naming the values."""
        for source in cls:
            if value == source.value:
                return source
        raise UserInputError(f"Unknown label source {str(value)[:40]!r}; use one of: {', '.join(s.value for s in cls)}.")


SOURCE_LABELS = {
    Source.ZERO_SHOT: "Zero-shot (CLIP text prompts)",
    Source.HEAD: "Model's own classifier",
    Source.GALLERY: "Gallery votes (nearest labelled images)",
}

NEIGHBOURS = 10


def available_sources() -> list[str]:
    model = runtime.embedder()
    sources = []
    if model.supports_text:
        sources.append(Source.ZERO_SHOT.value)
    if model.supports_classify:
        sources.append(Source.HEAD.value)
    sources.append(Source.GALLERY.value)  # works with any model
    return sources


def parse_labels(text: str) -> list[str]:
    if len(text or "") > MAX_TEXT:
        raise UserInputError(f"The label list is over {MAX_TEXT} characters; shorten it.")
    labels = list(dict.fromkeys(part.strip() for part in (text or "").replace("\n", ",").split(",") if part.strip()))
    if len(labels) > MAX_LABELS:
        raise UserInputError(f"{len(labels)} labels given; use at most {MAX_LABELS}.")
    return labels


@runtime.answers
def classify(image: str | None, source: str | None = None, labels: str | None = None, template: str | None = None,
             top_k: int = 5) -> tuple[dict[str, float], str]:
    """Top-k labels for an image as {label: confidence}, and which source answered.

    Args:
        image: the image to classify.
        source: where the labels come from: "zero_shot" (CLIP text prompts), "head" (the model's own classifier)
            or "gallery" (votes of the nearest labelled gallery images); default: the first the model offers.
        labels: zero-shot only: candidate labels, comma-separated (default: a list of everyday things).
        template: zero-shot only: the prompt, with {} where the label goes (default "a photo of a {}.").
        top_k: how many labels to return, 1 to 10 (default 5).
    """
    if len(template or "") > MAX_TEMPLATE:
        raise gr.Error(f"The prompt template is over {MAX_TEMPLATE} characters; shorten it.")
    top_k = runtime.bounded_int(top_k, 1, MAX_TOP_K, "Top-k")
    model = runtime.embedder()
    source = Source.parse(source) if source else Source(available_sources()[0])
    if source is Source.ZERO_SHOT:
        labels = DEFAULT_LABELS if labels is None else labels
        [predictions] = model.zero_shot([image], parse_labels(labels), template or DEFAULT_PROMPT_TEMPLATE, top_k)
    elif source is Source.HEAD:
        [predictions] = model.classify([image], top_k)
    else:
        predictions = vote(runtime.gallery().search(image=image, k=NEIGHBOURS), top_k)
        if not predictions:
            raise UserInputError("The gallery has no labelled images to vote; add labelled images or pick another source.")
    return {p.label: p.score for p in predictions}, f"Answered by: **{source.label}** with `{model.name}`"


def show_prompt_fields(source: str):
    visible = source == Source.ZERO_SHOT.value
    return gr.Textbox(visible=visible), gr.Textbox(visible=visible)


def build() -> gr.Blocks:
    sources = available_sources()
    zero_shot = sources[0] == Source.ZERO_SHOT.value
    with gr.Blocks() as page:
        with gr.Row():
            with gr.Column():
                image = runtime.image_input(label="Image", sources=["upload", "clipboard", "webcam"])
                source = gr.Radio([(Source(s).label, s) for s in sources], value=sources[0], label="Label source")
                labels = gr.Textbox(DEFAULT_LABELS, label="Candidate labels (comma-separated)", visible=zero_shot, max_length=MAX_TEXT)
                template = gr.Textbox(DEFAULT_PROMPT_TEMPLATE, label="Prompt template ({} is the label)", visible=zero_shot, max_length=MAX_TEMPLATE)
                top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k")
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                result = gr.Label(label="Top labels", num_top_classes=10)
                answered_by = gr.Markdown()
        inputs = [image, source, labels, template, top_k]
        examples = runtime.example_files("coffee.jpg", "cat-a.jpg", "face-a.jpg")
        if examples:  # answered on first click (with the default source), then cached for everyone
            gr.Examples([[path] for path in examples], [image], [result, answered_by], fn=classify, cache_examples=True,
                        cache_mode="lazy", label="Examples: one click shows the answer")
        button.click(classify, inputs, [result, answered_by], api_name="classify")
        image.upload(classify, inputs, [result, answered_by], api_name="classify_on_upload", api_visibility="undocumented")
        source.change(show_prompt_fields, source, [labels, template], api_name="show_prompt_fields", api_visibility="private")
    return page


if __name__ == "__main__":
    runtime.warm_up()
    build().launch()
