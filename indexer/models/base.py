"""The Embedder interface every backend implements.

Pipeline shape, as in transformers: `preprocess` (PIL -> tensor, CPU only, safe to run in worker
threads), `forward_images` (the only step that touches the model), `postprocess` (float32, L2-normalised).
"""
from __future__ import annotations

import logging
import math
import threading
import warnings
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image

from ..device import model_streams
from ..config import settings
from ..images import ImageSource, load_image
from ..lru import LruCache
from .batching import Coalescer

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_PROMPT_TEMPLATE = "a photo of a {}."
FINE_TUNE_BACKBONES = ("effnet-lite0", "open_clip ViT image towers")  # a Siamese head can fine-tune their top blocks


class CapabilityError(RuntimeError):
    """The loaded model lacks what was asked of it (a text tower, a classifier head)."""


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


T = TypeVar("T")
SMALL_BATCH_ROWS = 2  # model calls this small run on one thread (see Embedder._threads_for)
MIN_CHUNK_ROWS = 4  # a batch is split between the model's streams only into chunks at least this big
MODEL_THREAD_PREFIX = "twinsight-model"  # the name of every embedder's own model threads
TEXT_CACHE_SIZE = 4096  # text embeddings kept per model (~2 MB at 512-d), least recently used dropped first
# Texts the text tower is traced and checked on. The first fills the tower's whole context (it is cut), and is
# checked alone: a model may skip its padding mask when no row is padded, a branch the trace must not hide.
TRACE_TEXTS = ("a long caption " + "of a photo of a dog on a beach at sunset, " * 40, "a cat", "a diagram of a bicycle.")


class PixelsToTensor:
    """ToTensor + Normalize computed in numpy. Preprocessing runs in many threads (decode workers, app requests)
    beside the model's forward; torch would run these ops on its OpenMP pool, whose extra teams preempt the
    model's threads (a preempted thread stalls a whole parallel op). numpy uses the calling thread only."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        std = np.asarray(std, dtype=np.float32)
        self.scale = (1.0 / (255.0 * std))[:, None, None]  # (x / 255 - mean) / std, folded
        self.offset = (np.asarray(mean, dtype=np.float32) / std)[:, None, None]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = np.asarray(image)
        # Channels first while still 8-bit (a quarter of the bytes to move), then one multiply into float32.
        planes = pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))
        out = np.multiply(planes, self.scale, dtype=np.float32)
        out -= self.offset
        return torch.from_numpy(out)


class ResizeCenterCrop:
    """torchvision's Resize(short side) followed by CenterCrop, on a PIL image, as one PIL resize of only the
    region the crop keeps: the same pixels (within one level of rounding) at about half the cost, because the
    filter never computes the rows and columns the crop would throw away."""

    def __init__(self, size: int, crop: tuple[int, int], resample: int = Image.BICUBIC, round_offsets: bool = True):
        if crop[0] > size or crop[1] > size:
            raise ValueError(f"crop {crop} is larger than the resized short side {size}")
        self.size, self.crop, self.resample = size, crop, resample
        self.round_offsets = round_offsets  # torchvision rounds the crop's offsets; transformers truncates them

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        # torchvision's output size: the short side becomes `size`, the long side is truncated, not rounded.
        new_long = long if short == self.size else int(self.size * long / short)
        new_width, new_height = (self.size, new_long) if width <= height else (new_long, self.size)
        crop_height, crop_width = self.crop
        margin_y, margin_x = new_height - crop_height, new_width - crop_width
        if self.round_offsets:
            top, left = int(round(margin_y / 2.0)), int(round(margin_x / 2.0))
        else:
            top, left = margin_y // 2, margin_x // 2
        if (new_width, new_height) == (width, height):
            return image.crop((left, top, left + crop_width, top + crop_height))
        x_scale, y_scale = width / new_width, height / new_height
        box = (left * x_scale, top * y_scale, (left + crop_width) * x_scale, (top + crop_height) * y_scale)
        return image.resize((crop_width, crop_height), self.resample, box=box)


def fast_pil_transform(transform):
    """The same torchvision Compose, with Resize + CenterCrop done by ResizeCenterCrop and the ToTensor +
    Normalize tail by PixelsToTensor. Steps it does not recognise exactly are kept as they are."""
    from torchvision import transforms

    steps = list(getattr(transform, "transforms", []))
    if len(steps) >= 2 and type(steps[-2]).__name__ in ("ToTensor", "MaybeToTensor") and isinstance(steps[-1], transforms.Normalize):
        steps[-2:] = [PixelsToTensor(steps[-1].mean, steps[-1].std)]
    for i in range(len(steps) - 1):
        fused = _fused_resize_crop(steps[i], steps[i + 1])
        if fused is not None:
            steps[i : i + 2] = [fused]
            break
    return transforms.Compose(steps) if steps else transform


def _fused_resize_crop(resize, crop) -> ResizeCenterCrop | None:
    from torchvision import transforms

    if not (isinstance(resize, transforms.Resize) and isinstance(crop, transforms.CenterCrop)):
        return None
    size = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
    resample = _PIL_RESAMPLE.get(resize.interpolation.value)
    crop_size = tuple(crop.size) if len(crop.size) == 2 else (crop.size[0], crop.size[0])
    if size is None or resize.max_size is not None or resample is None or max(crop_size) > size:
        return None
    return ResizeCenterCrop(size, crop_size, resample)


_PIL_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}


class Embedder(ABC):
    """A shared-weight image (and optionally text) encoder with L2-normalised float32 outputs."""

    supports_text: bool = False
    supports_classify: bool = False
    # JPEGs are decoded at reduced scale while both sides stay >= this (load_image's draft_side): safe for
    # models whose input is at most this size; backends with larger inputs raise it.
    draft_side: int = 448
    channels_last: bool = False  # set by _finish_init for convolutional models

    def __init__(self, name: str, device: torch.device, dtype: torch.dtype, batch_size: int = DEFAULT_BATCH_SIZE):
        self.name = name
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.notice: str | None = None  # shown in the UI, e.g. the offline fallback
        # Every model call runs on the model's own threads ("streams"; indexer.device.model_streams: two on a CPU,
        # each with half the cores, one on a GPU). Called from each request's thread instead, every new thread got
        # an OpenMP team of its own, and the idle teams' spinning threads took CPU from the ones computing. Big
        # merged batches are split between the streams and keep both busy, so under load the queue grows into big
        # batches (~5% more requests/s than always two merged batches at once); a small batch keeps one stream and
        # the coalescer starts the next on the other (docs/BENCHMARKS.md, 4).
        self.model_workers, self._threads = model_streams(device)
        self._model_thread = ThreadPoolExecutor(max_workers=self.model_workers, thread_name_prefix=MODEL_THREAD_PREFIX)
        # TWINSIGHT_MAX_BATCH caps the rows of a merged batch (activation memory on a small GPU); 1 turns merging off.
        max_rows = settings().max_batch or max(batch_size, 64)
        self._coalescer = Coalescer(self._forward_batch, max_rows=max_rows, lanes=self.model_workers,
                                    lanes_for=self._parts)
        self._graphs: dict[str, torch.jit.ScriptModule] = {}  # traced forwards by key: method name or trunk (_eager)
        self._graph_inputs: dict[str, tuple] = {}  # per graph, its inputs' sizes past the batch and dtypes, as checked
        self._trunk_cuts: set[int] = set()  # trunk forwards to trace too (prepare_trunk: fine-tuned Siamese heads)
        self._text_cache: LruCache[str, np.ndarray] = LruCache(TEXT_CACHE_SIZE)
        self.dim = 0

    def _finish_init(self) -> None:
        """Pick the memory layout, warm up once and learn the embedding size from a real forward pass."""
        model = getattr(self, "model", None)
        convolutions = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) if isinstance(model, torch.nn.Module) else 0
        self.use_channels_last(convolutions > 4 and settings().channels_last)
        self.dim = int(self.encode_images([Image.new("RGB", (32, 32), "gray")]).shape[1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim}, device={self.device}, dtype={self.dtype})"

    @property
    def description(self) -> str:
        """Short human-readable description: model, device and precision."""
        return f"{self.name} · {self.device.type} · {str(self.dtype).replace('torch.', '')}"

    # -- the three pipeline steps ------------------------------------------------------------------------
    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> float32 CHW tensor. CPU only; never touches the model."""

    @abstractmethod
    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model forward on a batch already on `device` in `dtype`."""

    def use_channels_last(self, enabled: bool = True) -> None:
        """NHWC layout for convolutional models: oneDNN's and cuDNN's fast convolution kernels expect it
        (EfficientNet-Lite0 in bf16 on this CPU: ~1.5x at batch 8). A ViT has one convolution: left as it is."""
        self.channels_last = bool(enabled)
        model = getattr(self, "model", None)
        if isinstance(model, torch.nn.Module):
            model.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        self._prepare_forward()

    def _prepare_forward(self) -> None:
        """On a CPU, trace the forwards (image features; logits where there is a classifier head; the text tower
        where there is one; the trunks `prepare_trunk` asked for) into TorchScript graphs, each kept only if it
        gives exactly the eager outputs (checked on random pixels or sample texts at two batch sizes);
        TWINSIGHT_TRACE=0 keeps the eager forwards.

        Why: eager PyTorch releases and retakes the GIL around each of the forward's ~200 ops. While Gradio's
        event loop or request threads run Python, every retake waits: EfficientNet-Lite0 at batch 1 beside one
        busy Python thread fell from 54 to 1 images/s eager, and ran 11 traced (64 alone; docs/BENCHMARKS.md, 1).
        The graph runs the same ATen ops, so the results are bit-identical. GPUs keep the eager forward: not
        measured there. The text tower fared the same: ViT-B-32's, one text at a time beside a busy Python thread,
        0.7 texts/s eager and 13 traced (17-19 alone)."""
        self._graphs, self._graph_inputs = {}, {}
        self._trace_forwards(["_image_features"] + ["_logits"] * self.supports_classify
                             + ["_text_forward"] * self.supports_text + [_trunk_key(cut) for cut in sorted(self._trunk_cuts)])

    def _trace_forwards(self, keys: list[str]) -> None:
        """Trace and check the forwards `keys` (method names; "_trunk_forward/N" for a trunk) into `_graphs`."""
        if not tracing_enabled(self.device) or not isinstance(getattr(self, "model", None), torch.nn.Module):
            return
        rng = np.random.default_rng(0)
        photos = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(3)]
        pixels = (self._model_input(torch.stack([self.preprocess(photo) for photo in photos])),)
        examples = {key: self._text_input(list(TRACE_TEXTS)) if key == "_text_forward" else pixels for key in keys}
        graphs = self._on_model_thread(lambda: {key: self._trace(key, inputs) for key, inputs in examples.items()})
        for key, graph in graphs.items():
            if graph is not None:  # its signature first: _run reads the two without a lock
                self._graph_inputs[key] = input_signature(examples[key])
                self._graphs[key] = graph

    def _eager(self, key: str) -> Callable[..., torch.Tensor]:
        """The eager forward a graph key names: a method, or "_trunk_forward/N" (the trunk without N blocks)."""
        name, _, cut = key.partition("/")
        method = getattr(self, name)
        return (lambda pixels: method(pixels, int(cut))) if cut else method

    def _trace(self, name: str, inputs: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule | None:
        return trace_checked(self.model, self._eager(name), inputs, f"{self.name}: {name}")

    def _run(self, name: str, *inputs: torch.Tensor) -> torch.Tensor:
        """The forward `name` on model inputs: its traced graph for inputs of the size it was checked at, else the
        method itself (another size could take a branch the trace did not record). A method set on the instance
        (tests, benchmarks wrapping the forward) runs as it is."""
        graph = self._graphs.get(name)
        if graph is None or name.partition("/")[0] in vars(self) or input_signature(inputs) != self._graph_inputs[name]:
            return self._eager(name)(*inputs)
        return graph(*inputs)

    def _model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, self.dtype)
        return pixels.contiguous(memory_format=torch.channels_last) if self.channels_last else pixels

    def _submit(self, call: Callable[[], T], threads: int | None = None) -> Future:
        """Start a model call on one of the model's threads under inference_mode, with `threads` intra-op threads
        (default: the stream's share); a call made from a model thread (a model call inside one) runs inline."""
        def run() -> T:
            wanted = threads or self._threads
            if torch.get_num_threads() != wanted:
                torch.set_num_threads(wanted)  # OpenMP's setting is per thread: each stream keeps its own
            # Unoptimised graph execution: the profiling executor would re-specialise the traced forward for every
            # new batch size (a first call ~4x slower) and may fuse ops; unoptimised, it runs exactly the eager ops.
            with torch.inference_mode(), torch.jit.optimized_execution(False):
                return call()

        if threading.current_thread().name.startswith(MODEL_THREAD_PREFIX):
            done: Future = Future()
            try:
                done.set_result(run())
            except BaseException as exc:
                done.set_exception(exc)
            return done
        return self._model_thread.submit(run)

    def _on_model_thread(self, call: Callable[[], T], threads: int | None = None) -> T:
        return self._submit(call, threads).result()

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float32 CPU features of a preprocessed batch (runs on a model thread)."""
        return self._run("_image_features", self._model_input(pixels)).float().cpu()

    @staticmethod
    def _threads_for(rows: int) -> int | None:
        # 1-2 rows run on one thread: off the main thread, torch's second OpenMP thread made a single image slower,
        # not faster (EfficientNet-Lite0 33 -> 66 images/s at batch 1; ViT-B-32 20 -> 22). None: the stream's share.
        return 1 if rows <= SMALL_BATCH_ROWS else None

    def _parts(self, rows: int) -> int:
        return max(1, min(self.model_workers, rows // MIN_CHUNK_ROWS))

    def _on_streams(self, pixels: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`forward` of a preprocessed batch, split between the streams when each part keeps at least
        MIN_CHUNK_ROWS rows (smaller batches lose more to per-row inefficiency than they gain: ViT-B-32 on one
        thread runs 23 images/s at batch 1 and 64 at batch 8)."""
        parts = self._parts(len(pixels))
        chunks = pixels.split(math.ceil(len(pixels) / parts)) if parts > 1 else (pixels,)
        futures = [self._submit(lambda chunk=chunk: forward(chunk), self._threads_for(len(chunk))) for chunk in chunks]
        return torch.cat([future.result() for future in futures])

    def _forward_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._on_streams(pixels, self._features)

    def embed_pixels_async(self, pixels: torch.Tensor) -> Future:
        """A Future of `embed_pixels(pixels)`, run whole on the next free stream while the caller goes on: with one
        batch per stream in flight (the indexer's pipeline), no stream waits for another's half of a batch."""
        return self._submit(lambda: self.postprocess(self._features(pixels)), self._threads_for(len(pixels)))

    def forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Concurrent small calls (many app users) are merged into one batch of at most `max_rows` (TWINSIGHT_MAX_BATCH);
        calls that big or bigger run as they are."""
        if len(pixels) >= self._coalescer.max_rows:
            return self._forward_batch(pixels)
        return self._coalescer(pixels)

    @staticmethod
    def postprocess(features: torch.Tensor) -> np.ndarray:
        return torch.nn.functional.normalize(features.float(), dim=-1).numpy().astype(np.float32, copy=False)

    # -- public API --------------------------------------------------------------------------------------
    def preprocess_many(self, images: Sequence[ImageSource]) -> torch.Tensor:
        return torch.stack([self.preprocess(load_image(image, draft_side=self.draft_side)) for image in images])

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Embeddings for a preprocessed batch (used by the indexer's parallel decode pipeline)."""
        return self.postprocess(self.forward_images(pixels))

    def encode_images(self, images: Sequence[ImageSource], batch_size: int | None = None) -> np.ndarray:
        """(n, dim) float32, L2-normalised. Accepts paths, bytes, PIL images or arrays."""
        batch_size = batch_size or self.batch_size
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = [self.embed_pixels(self.preprocess_many(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks)

    # -- fine-tuning the top of the backbone (Siamese heads) -----------------------------------------------
    # The shared model stays frozen: a head that fine-tunes the last `cut_blocks` blocks keeps its own copy of
    # them (`top_module`) and feeds it this model's trunk output (everything below those blocks).
    def trunk_features(self, pixels: torch.Tensor, cut_blocks: int) -> torch.Tensor:
        """Float32 CPU activations of a preprocessed batch after all but the last `cut_blocks` blocks."""
        self._check_cut(cut_blocks)
        key = _trunk_key(cut_blocks)
        return self._on_streams(pixels, lambda chunk: self._run(key, self._model_input(chunk)).float().cpu())

    def prepare_trunk(self, cut_blocks: int) -> None:
        """Trace the trunk forward for a head that fine-tuned the last `cut_blocks` blocks, as the other forwards
        are at load (Verifier.add_head calls it): eager, the trunk is most of the backbone and meets the GIL."""
        self._check_cut(cut_blocks)
        if cut_blocks not in self._trunk_cuts:
            self._trunk_cuts.add(cut_blocks)
            self._trace_forwards([_trunk_key(cut_blocks)])

    def encode_trunk(self, images: Sequence[ImageSource], cut_blocks: int, batch_size: int | None = None) -> torch.Tensor:
        """`trunk_features` of images (paths, PIL, ...), in batches."""
        batch_size = batch_size or self.batch_size
        return torch.cat([
            self.trunk_features(self.preprocess_many(images[i : i + batch_size]), cut_blocks)
            for i in range(0, len(images), batch_size)
        ])

    def top_module(self, cut_blocks: int) -> torch.nn.Module:
        """A trainable float32 copy of the last `cut_blocks` blocks + pooling: trunk features -> pooled
        features (before L2 normalisation). Changing it never changes this model."""
        self._check_cut(cut_blocks)
        return self._top_copy(cut_blocks)

    def _check_cut(self, cut_blocks: int) -> None:
        if not self.fine_tune_max_blocks:  # backends that support it set how many blocks there are
            raise CapabilityError(
                f"{self.name} cannot fine-tune backbone blocks; fine-tuning (--fine-tune-blocks N > 0) supports "
                f"{', '.join(FINE_TUNE_BACKBONES)}. Use --fine-tune-blocks 0 to train only the head."
            )
        if not 1 <= cut_blocks <= self.fine_tune_max_blocks:
            raise ValueError(f"{self.name} can fine-tune 1 to {self.fine_tune_max_blocks} blocks, not {cut_blocks}.")

    fine_tune_max_blocks: int = 0  # > 0: `_trunk_forward` and `_top_copy` split the model before its last blocks

    def _trunk_forward(self, pixels: torch.Tensor, cut_blocks: int) -> torch.Tensor:
        raise NotImplementedError

    def _top_copy(self, cut_blocks: int) -> torch.nn.Module:
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, in the same space as the images."""
        if not self.supports_text:
            raise CapabilityError(
                f"{self.name} has no text tower, so it cannot embed text; load a CLIP model "
                "(e.g. open_clip:ViT-B-32/laion2b_s34b_b79k) for text search and zero-shot labels."
            )
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Zero-shot labels and text queries repeat from request to request (the page's default labels above all),
        # and the text tower is costly: ViT-B-32's 10 default prompts took 430 ms, one image 88 ms. So each text is
        # embedded once (a zero-shot call on one image: 537 -> 98 ms, docs/BENCHMARKS.md, 1).
        known = {text: vector for text in dict.fromkeys(texts) if (vector := self._text_cache.get(text)) is not None}
        missing = [text for text in dict.fromkeys(texts) if text not in known]
        if missing:
            vectors = self.postprocess(self._on_model_thread(lambda: self._text_features(missing).float().cpu()))
            for text, vector in zip(missing, vectors):
                known[text] = vector
                self._text_cache.put(text, vector)
        return np.stack([known[text] for text in texts])

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        return self._run("_text_forward", *self._text_input(texts))

    def _text_input(self, texts: list[str]) -> tuple[torch.Tensor, ...]:
        """Token tensors of `texts` on the device, padded to the tower's fixed length (models with a text tower)."""
        raise NotImplementedError

    def _text_forward(self, *tokens: torch.Tensor) -> torch.Tensor:
        """The text tower on `_text_input`'s tensors."""
        raise NotImplementedError

    @property
    def labels(self) -> list[str]:
        """Class names of the classifier head, index-aligned with its logits."""
        raise CapabilityError(f"{self.name} has no classifier head; use zero-shot labels or gallery votes.")

    def classify(self, images: Sequence[ImageSource], top_k: int = 5) -> list[list[Prediction]]:
        """Top-k labels of the model's own classifier head for each image, best first."""
        if not self.supports_classify:
            raise CapabilityError(f"{self.name} has no classifier head; use zero-shot labels or gallery votes.")
        pixels = self.preprocess_many(images)
        logits = self._on_streams(pixels, lambda chunk: self._run("_logits", self._model_input(chunk)).float().cpu())
        return [_top_k(row.softmax(-1), self.labels, top_k) for row in logits]

    def _logits(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def zero_shot(
        self, images: Sequence[ImageSource], labels: Sequence[str], template: str = DEFAULT_PROMPT_TEMPLATE, top_k: int = 5
    ) -> list[list[Prediction]]:
        """CLIP zero-shot: softmax over the similarity of each image to `template.format(label)`."""
        labels = [label.strip() for label in labels if label and label.strip()]
        if not labels:
            raise ValueError("Zero-shot classification needs at least one label, e.g. 'cat, dog, car'.")
        if "{}" not in template:
            raise ValueError("The prompt template must contain {} where the label goes, e.g. 'a photo of a {}.'")
        text = torch.from_numpy(self.encode_texts([template.format(label) for label in labels]))
        image = torch.from_numpy(self.encode_images(images))
        probs = (self.logit_scale * image @ text.T).softmax(-1)
        return [_top_k(row, labels, top_k) for row in probs]

    logit_scale: float = 100.0  # CLIP's learned temperature; backends override with the model's own


class _Forward(torch.nn.Module):
    """An embedder's forward as a module of its model, so a trace holds the weights as shared parameters, not
    constants (no second copy)."""

    def __init__(self, model: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._forward(*inputs)


def tracing_enabled(device: torch.device) -> bool:
    """Forwards run as traces on a CPU unless TWINSIGHT_TRACE=0 (GPUs keep eager: not measured there)."""
    return device.type == "cpu" and settings().trace


def trace_checked(weights: torch.nn.Module, forward: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...],
                  what: str) -> torch.jit.ScriptModule | None:
    """`forward` traced on the first 2 rows of `inputs` (at least 3 rows), or None (with a warning naming `what`)
    unless the graph gives exactly `forward`'s outputs at 1 row and at all of them. `weights`: the module(s)
    `forward` uses, so the graph shares their parameters instead of copying them in as constants."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings and torch.jit.trace's deprecation notice
            graph = torch.jit.trace(_Forward(weights, forward), tuple(x[:2] for x in inputs), check_trace=False)
        if all(torch.equal(graph(*rows), forward(*rows)) for rows in (tuple(x[:1] for x in inputs), inputs)):
            return graph
        log.warning("%s: the traced forward differs from the eager one; running eager", what)
    except Exception as exc:  # a model tracing cannot follow (data-dependent Python): eager still works
        log.warning("%s: cannot trace the forward (%s); running eager", what, str(exc)[:200])
    return None


def _trunk_key(cut_blocks: int) -> str:
    return f"_trunk_forward/{int(cut_blocks)}"


def input_signature(inputs: tuple[torch.Tensor, ...]) -> tuple:
    """What a graph's inputs must match: each one's size past the batch dimension, and dtype."""
    return tuple((tuple(x.shape[1:]), x.dtype) for x in inputs)


def _top_k(probs: torch.Tensor, labels: Sequence[str], k: int) -> list[Prediction]:
    values, indices = probs.topk(min(k, len(labels)))
    return [Prediction(labels[int(i)], float(v)) for v, i in zip(values, indices)]
