"""The Embedder interface every backend implements.

Pipeline shape, as in transformers: `preprocess` (PIL -> tensor, CPU only, safe to run in worker
threads), `forward_images` (the only step that touches the model), `postprocess` (float32, L2-normalised).
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..config import settings
from ..errors import CapabilityError, UserInputError
from ..images import ImageSource, load_image
from ..lru import LruCache
from .execution import ModelStreams, threads_for
from .quantize import quantize_linears
from .tracing import TRACE_TEXTS, TracedForwards, trace_checked, tracing_enabled

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_PROMPT_TEMPLATE = "a photo of a {}."
FINE_TUNE_BACKBONES = ("effnet-lite0", "open_clip ViT image towers")  # a Siamese head can fine-tune their top blocks
TEXT_CACHE_SIZE = 4096  # text embeddings kept per model (~2 MB at 512-d), least recently used dropped first


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


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
        # TWINSIGHT_MAX_BATCH caps the rows of a merged batch (activation memory on a small GPU); 1 turns merging off.
        self.streams = ModelStreams(device, self._forward_batch, settings().max_batch or max(batch_size, 64))
        self.model_workers = self.streams.workers
        self.traced = TracedForwards()  # forwards by key: method name or trunk (_eager)
        self._trunk_cuts: set[int] = set()  # trunk forwards to trace too (prepare_trunk: fine-tuned Siamese heads)
        self._text_cache: LruCache[str, np.ndarray] = LruCache(TEXT_CACHE_SIZE)
        self.dim = 0
        self.int8 = False  # use_int8: the image tower's Linear layers in int8

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
        dtype = str(self.dtype).replace("torch.", "")
        return f"{self.name} · {self.device.type} · {'int8 + ' * self.int8}{dtype}"

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

    def _image_tower(self) -> tuple[torch.nn.Module, tuple[str, ...] | None]:
        """The module the image forward runs, and the names of its children that form the image tower (None: all
        of them). A text tower is left out: texts are few and cached, and stay in the float dtype."""
        return self.model, None

    def use_int8(self) -> None:
        """Run the image tower's Linear layers in int8 (TWINSIGHT_PRECISION=int8; models/quantize.py says how), then
        trace the forwards again. Layers that are not Linear (convolutions) keep the model's float dtype."""
        model, children = self._image_tower()
        total = sum(p.numel() for name, child in model.named_children() if children is None or name in children
                    for p in child.parameters())
        swapped = quantize_linears(model, children)
        self.int8 = True
        if swapped < total / 2:
            log.warning("%s: int8 covers Linear layers only, %.0f%% of the image tower's weights; the rest runs in %s",
                        self.name, 100 * swapped / max(total, 1), self.dtype)
        self._prepare_forward()

    def _prepare_forward(self) -> None:
        """On a CPU, trace the forwards (image features; logits where there is a classifier head; the text tower
        where there is one; the trunks `prepare_trunk` asked for) into checked TorchScript graphs (models/tracing.py,
        which says why); TWINSIGHT_TRACE=0 keeps the eager forwards. The text tower gains as the image one does:
        ViT-B-32's, one text at a time beside a busy Python thread, 0.7 texts/s eager and 13 traced (17-19 alone)."""
        self.traced.clear()
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
        graphs = self.streams.call(lambda: {key: self._trace(key, inputs) for key, inputs in examples.items()})
        for key, graph in graphs.items():
            if graph is not None:
                self.traced.add(key, graph, examples[key])

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
        if name.partition("/")[0] in vars(self):
            return self._eager(name)(*inputs)
        return self.traced.run(name, self._eager(name), *inputs)

    def _model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, self.dtype)
        return pixels.contiguous(memory_format=torch.channels_last) if self.channels_last else pixels

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float32 CPU features of a preprocessed batch (runs on a model thread)."""
        return self._run("_image_features", self._model_input(pixels)).float().cpu()

    def _forward_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.streams.split(pixels, self._features)

    def embed_pixels_async(self, pixels: torch.Tensor) -> Future:
        """A Future of `embed_pixels(pixels)`, run whole on the next free stream while the caller goes on: with one
        batch per stream in flight (the indexer's pipeline), no stream waits for another's half of a batch."""
        return self.streams.submit(lambda: self.postprocess(self._features(pixels)), threads_for(len(pixels)))

    def forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Concurrent small calls (many app users) are merged into one batch of at most `max_rows` (TWINSIGHT_MAX_BATCH);
        calls that big or bigger run as they are."""
        if len(pixels) >= self.streams.coalescer.max_rows:
            return self._forward_batch(pixels)
        return self.streams.coalescer(pixels)

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
        return self.streams.split(pixels, lambda chunk: self._run(key, self._model_input(chunk)).float().cpu())

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
        if self.int8:
            raise CapabilityError(f"{self.name} runs in int8, whose blocks cannot be trained; fine-tune with "
                                  "TWINSIGHT_PRECISION=auto (bf16 or fp32).")
        return self._top_copy(cut_blocks)

    def _check_cut(self, cut_blocks: int) -> None:
        if not self.fine_tune_max_blocks:  # backends that support it set how many blocks there are
            raise CapabilityError(
                f"{self.name} cannot fine-tune backbone blocks; fine-tuning (--fine-tune-blocks N > 0) supports "
                f"{', '.join(FINE_TUNE_BACKBONES)}. Use --fine-tune-blocks 0 to train only the head."
            )
        if not 1 <= cut_blocks <= self.fine_tune_max_blocks:
            raise UserInputError(f"{self.name} can fine-tune 1 to {self.fine_tune_max_blocks} blocks, not {cut_blocks}.")

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
            vectors = self.postprocess(self.streams.call(lambda: self._text_features(missing).float().cpu()))
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
        logits = self.streams.split(pixels, lambda chunk: self._run("_logits", self._model_input(chunk)).float().cpu())
        return [_top_k(row.softmax(-1), self.labels, top_k) for row in logits]

    def _logits(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def zero_shot(
        self, images: Sequence[ImageSource], labels: Sequence[str], template: str = DEFAULT_PROMPT_TEMPLATE, top_k: int = 5
    ) -> list[list[Prediction]]:
        """CLIP zero-shot: softmax over the similarity of each image to `template.format(label)`."""
        labels = [label.strip() for label in labels if label and label.strip()]
        if not labels:
            raise UserInputError("Zero-shot classification needs at least one label, e.g. 'cat, dog, car'.")
        if "{}" not in template:
            raise UserInputError("The prompt template must contain {} where the label goes, e.g. 'a photo of a {}.'")
        text = torch.from_numpy(self.encode_texts([template.format(label) for label in labels]))
        image = torch.from_numpy(self.encode_images(images))
        probs = (self.logit_scale * image @ text.T).softmax(-1)
        return [_top_k(row, labels, top_k) for row in probs]

    logit_scale: float = 100.0  # CLIP's learned temperature; backends override with the model's own


def _trunk_key(cut_blocks: int) -> str:
    return f"_trunk_forward/{int(cut_blocks)}"


def _top_k(probs: torch.Tensor, labels: Sequence[str], k: int) -> list[Prediction]:
    values, indices = probs.topk(min(k, len(labels)))
    return [Prediction(labels[int(i)], float(v)) for v, i in zip(values, indices)]
