"""Pairwise tab: two images, one shared encoder, a distance and a calibrated match / no-match verdict."""
from __future__ import annotations

import gradio as gr

from indexer.face import FaceError
from indexer.verify import Mode, Reduce, Verification

from . import runtime

MODE_HELP = {
    Mode.GENERAL: "General: whole-image similarity from the shared model (same object, scene or product).",
    Mode.FACE: "Face: detects, aligns and crops the face, then dlib's 128-d face descriptor (same person?).",
    Mode.SIGNATURE: "Signature: ink on paper is cleaned, cropped and centred before embedding (same writer?).",
}
MODE_LABELS = {Mode.GENERAL: "General", Mode.FACE: "Face", Mode.SIGNATURE: "Signature"}
REDUCE_LABELS = {Reduce.BEST: "Closest reference", Reduce.MEAN: "Mean over references",
                 Reduce.RELATIVE: "Mean, relative to how the references vary (2+ references)"}
# Each crop whole, side by side, at a readable size. Gradio's gallery stretches n items over the full width (two
# face crops became 593 px squares) and clips them at its height, which showed only the eyes.
CSS = """
.whole-crops .grid-container { grid-template-columns: repeat(auto-fill, 224px) !important; }
.whole-crops .grid-wrap, .whole-crops .gallery-container, .whole-crops.block { height: auto !important; min-height: 0 !important;
  max-height: none !important; }
"""
THRESHOLD_RANGE = {Mode.FACE: 1.2, Mode.GENERAL: 1.0, Mode.SIGNATURE: 1.0}
MAX_REFERENCES = 20


def _mode(value: str | None) -> Mode:
    """The mode from its value ("general"), or a clear error naming the values."""
    for mode in Mode:
        if value == mode.value:
            return mode
    raise gr.Error(f"Unknown mode {str(value)[:40]!r}; use one of: {', '.join(m.value for m in Mode)}.")


def threshold_slider(mode: str) -> gr.Slider:
    """The slider for `mode`, set to its default threshold and saying where that default comes from."""
    mode = _mode(mode)
    default = runtime.verifier().threshold(mode)
    return gr.Slider(
        minimum=0.0, maximum=THRESHOLD_RANGE[mode], value=round(default.value, 4), step=0.001,
        label=f"Match threshold: {runtime.verifier().metric(mode)} at or below it is a match",
        info=f"Default {default.value:.3f}: {default.source}.",
    )


def _threshold(mode: Mode, value: float | None) -> float | None:
    """None (the mode's default, so its source is stated) unless the user moved the slider."""
    if value is None or abs(float(value) - runtime.verifier().threshold(mode).value) < 5e-4:
        return None
    return float(value)


def _outputs(result: Verification) -> tuple:
    verdict = ("## ✔ Match" if result.match else "## ✘ No match") + f" ({result.mode.value} mode, `{result.model}`)"
    captions = ["A", "B"] if len(result.crops) == 2 else [f"reference {i + 1}" for i in range(len(result.crops) - 1)] + ["questioned"]
    return (round(result.similarity, 4), round(result.distance, 4), verdict, result.explanation,
            [(runtime.image_file(crop), caption) for crop, caption in zip(result.crops, captions)])


def _on_multiple(largest_face: bool) -> str:
    return "largest" if largest_face else "error"


def _face_problem(exc: FaceError) -> tuple:
    """No verdict, but say why and show the faces that were found, so the user can crop or tick 'largest'."""
    crops = [(crop, f"face {i + 1}") for i, crop in enumerate(exc.crops or [])]
    return None, None, "## ⚠ No verdict", str(exc), crops


def _answer(verify) -> tuple:
    """Run a verification; several faces give an explained no-verdict (other errors: runtime.answers)."""
    try:
        return _outputs(verify())
    except FaceError as exc:
        if exc.crops:
            return _face_problem(exc)
        raise  # shown by runtime.answers


@runtime.answers
def compare(image_a: str | None, image_b: str | None, mode: str = Mode.GENERAL.value, threshold: float | None = None,
            largest_face: bool = False):
    """Are two images the same thing, person or writer? Similarity, distance, verdict, explanation and the crops
    compared. Symmetric in A and B.

    Args:
        image_a: the first image.
        image_b: the second image.
        mode: "general" (whole image), "face" (aligned face, dlib descriptor) or "signature" (cleaned ink).
        threshold: the distance at or below which it is a match (default: the mode's calibrated default).
        largest_face: face mode: when a photo shows several faces, compare the largest instead of refusing.
    """
    if not image_a or not image_b:
        raise gr.Error("Drop an image in both boxes to compare them.")
    mode = _mode(mode)
    return _answer(lambda: runtime.verifier().compare(
        image_a, image_b, mode, _threshold(mode, threshold), _on_multiple(largest_face)))


@runtime.answers
def enrol_and_compare(references: list[str] | None, questioned: str | None, mode: str = Mode.GENERAL.value,
                      reduce: str = Reduce.BEST.value, threshold: float | None = None, largest_face: bool = False):
    """Compare a questioned image against several enrolled references (score = closest or mean, as chosen).

    Args:
        references: the enrolled reference images (1 to 20).
        questioned: the image to check against them.
        mode: "general" (default), "face" or "signature".
        reduce: "best" (the closest reference decides), "mean" (the mean distance to all references) or "relative"
            (that mean over the mean distance among the references; its threshold is in those units).
        threshold: the distance at or below which it is a match (default: the mode's calibrated default).
        largest_face: face mode: when a photo shows several faces, compare the largest instead of refusing.
    """
    if not references:
        raise gr.Error("Enrol at least one reference image.")
    if len(references) > MAX_REFERENCES:
        raise gr.Error(f"{len(references)} references given; use at most {MAX_REFERENCES}.")
    if not questioned:
        raise gr.Error("Drop the questioned image to compare against the references.")
    mode = _mode(mode)
    return _answer(lambda: runtime.verifier().enrol_and_compare(
        references, questioned, mode, Reduce(reduce or Reduce.BEST.value), _threshold(mode, threshold), _on_multiple(largest_face)))


def default_reduce(mode: str) -> str:
    """Signature mode scores enrolments relative to the references' spread: on writers held out of training it cut the
    skilled-forgery error rate by about a quarter (docs/VERIFICATION.md); other modes' models carry no threshold for it."""
    return (Reduce.RELATIVE if _mode(mode) is Mode.SIGNATURE else Reduce.BEST).value


def build() -> gr.Blocks:
    with gr.Blocks() as page:
        mode = gr.Radio([(MODE_LABELS[m], m.value) for m in Mode], value=Mode.GENERAL.value, label="Mode")
        mode_help = gr.Markdown(MODE_HELP[Mode.GENERAL])
        with gr.Row():
            image_a = runtime.image_input(label="Image A", sources=["upload", "clipboard", "webcam"])
            image_b = runtime.image_input(label="Image B", sources=["upload", "clipboard", "webcam"])
        threshold = threshold_slider(Mode.GENERAL.value)
        largest_face = gr.Checkbox(False, label="Face mode: when a photo shows several faces, compare the largest")
        button = gr.Button("Compare", variant="primary")
        with gr.Accordion("Several references (writer- or person-dependent check)", open=False):
            references = gr.File(file_count="multiple", file_types=["image"], label="Enrolled references")
            questioned = runtime.image_input(label="Questioned image")
            reduce = gr.Radio([(REDUCE_LABELS[r], r.value) for r in Reduce], value=Reduce.BEST.value, label="Score",
                              info="best: the closest reference decides; mean: the mean distance to all references; "
                                   "relative: that mean over how much the references differ from one another (its "
                                   "threshold comes from the encoder's card; signature mode's default)")
            enrol_button = gr.Button("Compare with references")
        with gr.Row():
            similarity = gr.Number(label="Similarity (higher = more alike)", precision=4)
            distance = gr.Number(label="Distance", precision=4)
        verdict = gr.Markdown()
        explanation = gr.Markdown()
        crops = gr.Gallery(label="What was compared", columns=6, height="auto", allow_preview=False, object_fit="contain",
                           elem_classes=["whole-crops"])
        outputs = [similarity, distance, verdict, explanation, crops]
        examples = runtime.pairwise_examples()
        if examples:  # answered on first click, then cached for everyone
            gr.Examples(examples, [image_a, image_b, mode], outputs, fn=compare, cache_examples=True, cache_mode="lazy",
                        label="Examples (made by the project): one click shows the answer")
        button.click(compare, [image_a, image_b, mode, threshold, largest_face], outputs, api_name="compare")
        enrol_button.click(enrol_and_compare, [references, questioned, mode, reduce, threshold, largest_face], outputs,
                           api_name="enrol_and_compare")
        mode.change(lambda m: MODE_HELP[Mode(m)], mode, mode_help, api_name="mode_help", api_visibility="private")
        mode.change(threshold_slider, mode, threshold, api_name="mode_threshold", api_visibility="undocumented")
        mode.change(default_reduce, mode, reduce, api_name="mode_reduce", api_visibility="undocumented")
    return page


if __name__ == "__main__":
    runtime.warm_up()
    build().launch()
