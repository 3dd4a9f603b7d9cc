"""A Siamese encoder trained end to end: a compact convolutional network for ink (handwriting, signatures,
line drawings) that needs no ImageNet backbone.

Input: the ink of an image (indexer.signature.ink_crop: greyscale, polarity, crop to the ink, pad to the
architecture's aspect ratio), resized to twice the working size, ink = 1 and paper = 0. The network first
averages that down to its working size (so training can distort and thicken strokes at the finer scale),
then runs its convolutional blocks; the output is L2-normalised and compared by cosine distance, as every
other Twinsight vector is. Saved as `encoder.safetensors` + `card.json` (format twinsight-siamese-encoder/1).
Architectures are data (ARCHITECTURES), named in the card, so a saved encoder rebuilds without code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..images import ImageSource
from ..signature import SignatureError, ink_crop
from .cards import write_card
from .distort import random_affine

ENCODER_FORMAT = "twinsight-siamese-encoder/1"
ENCODER_WEIGHTS_FILE = "encoder.safetensors"
CENTRES_FILE = "centres.safetensors"  # siamese.fused: the companion's block centres
SUPERSAMPLE = 2  # images are prepared at this multiple of the working size (finer augmentation)

# blocks: [out_channels, kernel, max-pool after?]; "same" padding keeps the size through a convolution.
# train: the trainer's defaults for the architecture (steps, identities x images per step, validation interval).
# test_time_views: a trained encoder's vector is the mean over the image and this many - 1 fixed distortions of it
# (conv4-28 on held-out Omniglot alphabets, 2 seeds: 72.5 -> 78.0% and 77.0 -> 81.3% with 6 views).
ARCHITECTURES: dict[str, dict] = {
    # Conv-4 (Vinyals et al., Snell et al.): 4 x (3x3 conv 64, BN, ReLU, 2x2 max-pool) on 28x28 -> 64-d.
    "conv4-28": {"size": [28, 28], "blocks": [[64, 3, True]] * 4, "padding": "same", "embed_dim": None,
                 "train": {"steps": 1800, "ways": 60, "per_class": 6, "val_every": 250}, "test_time_views": 6},
    # The same on the whole page, not cropped to the ink: where and how large a character is drawn still counts.
    "conv4-28-page": {"size": [28, 28], "blocks": [[64, 3, True]] * 4, "padding": "same", "embed_dim": None, "crop": False,
                      "train": {"steps": 1800, "ways": 60, "per_class": 6, "val_every": 250}},
    # The same blocks on 40x40 with a linear embedding (more detail per character, ~4x the compute).
    "conv4-40": {"size": [40, 40], "blocks": [[64, 3, True]] * 4, "padding": "same", "embed_dim": 128,
                 "train": {"steps": 1200, "ways": 40, "per_class": 6, "val_every": 200}},
    # Koch et al.'s layout (10x10, 7x7, 4x4, 4x4 convolutions on 105x105) at a quarter of its widths, so it ships
    # in a few MB; their 4096-d fully connected layer alone would be 150 MB.
    "koch-105": {"size": [105, 105], "blocks": [[32, 10, True], [64, 7, True], [64, 4, True], [128, 4, False]],
                 "padding": "valid", "embed_dim": 256, "train": {"steps": 1500, "ways": 20, "per_class": 4, "val_every": 250}},
    # Signatures are wide: Conv-4 on a 48x112 canvas (width / height 7 / 3), a linear embedding on top.
    # companion: an image model fused with the encoder in signature mode (indexer.siamese.fused); on held-out writers
    # with 5 references scored relative to their spread, fusing its centred texture blocks cut the skilled-forgery EER
    # from 23.0% to 9.1% and the random one from 5.9% to 1.3% (docs/VERIFICATION.md).
    "conv4-sig": {"size": [48, 112], "blocks": [[32, 3, True], [64, 3, True], [64, 3, True], [128, 3, True]],
                  "padding": "same", "embed_dim": 128,
                  "train": {"steps": 400, "ways": 30, "per_class": 4, "val_every": 50, "companion": "effnet-lite0"}},
}
DEFAULT_ARCHITECTURE = {"signature": "conv4-sig", "strokes": "conv4-28"}


def architecture(name: str) -> dict:
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown encoder architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[name]


class ConvEncoder(nn.Module):
    """(n, 1, 2H, 2W) ink in [0, 1] -> (n, dim) L2-normalised. The last block has no ReLU: non-negative
    vectors would only use one orthant of the sphere that cosine distance measures on."""

    def __init__(self, config: dict):
        super().__init__()
        self.size = tuple(config["size"])
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(self.size)]
        channels, height, width = 1, *self.size
        blocks = config["blocks"]
        for k, (out, kernel, pool) in enumerate(blocks):
            same = config.get("padding", "same") == "same"
            layers += [nn.Conv2d(channels, out, kernel, padding="same" if same else 0, bias=False), nn.BatchNorm2d(out)]
            if not same:
                height, width = height - kernel + 1, width - kernel + 1
            if k < len(blocks) - 1 or config.get("embed_dim"):
                layers.append(nn.ReLU(inplace=True))
            if pool:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out
        if height < 1 or width < 1:
            raise ValueError(f"Architecture {config} shrinks its {self.size} input to nothing.")
        layers.append(nn.Flatten())
        self.dim = channels * height * width
        if config.get("embed_dim"):
            layers.append(nn.Linear(self.dim, config["embed_dim"]))
            self.dim = config["embed_dim"]
        self.net = nn.Sequential(*layers)

    def forward(self, ink: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(ink), dim=-1)


def ink_pixels(source: ImageSource, size: Sequence[int], strict: bool = True, crop: bool = True) -> np.ndarray:
    """(2H, 2W) float32 ink (1) on paper (0) of `source`, cropped (unless crop=False: the whole page), padded to
    the aspect ratio of `size` (H, W). strict=False gives blank paper for an image with no ink (a gallery may
    hold such pages) instead of raising."""
    height, width = (SUPERSAMPLE * int(s) for s in size)
    try:
        crop = ink_crop(source, aspect=width / height, crop=crop)
    except SignatureError:
        if strict:
            raise
        return np.zeros((height, width), np.float32)
    resized = Image.fromarray(crop).resize((width, height), Image.Resampling.BOX if crop.shape[0] >= height else Image.Resampling.BILINEAR)
    return 1.0 - np.asarray(resized, dtype=np.float32) / 255.0


def preview(pixels: np.ndarray) -> Image.Image:
    """What the encoder saw, dark ink on white, for the UI."""
    return Image.fromarray(np.uint8(np.clip(255.0 * (1.0 - pixels), 0, 255))).convert("RGB")


@dataclass
class SiameseEncoder:
    """A trained encoder and its card. `card["threshold"]["value"]` is a cosine distance: same when <= it."""

    module: ConvEncoder
    card: dict = field(default_factory=dict)
    source: str = ""
    # the mean of each fused block over the training images (siamese.fused: the encoder's, then its companion's)
    centres: list[np.ndarray] = field(default_factory=list)

    standalone = True  # needs no shared backbone (Verifier.add_head)
    fine_tune_blocks = 0

    @property
    def mode(self) -> str:
        return self.card.get("mode", "signature")

    @property
    def backbone(self) -> str:
        return f"siamese encoder {self.card.get('architecture', {}).get('name', '')}".strip()

    @property
    def size(self) -> tuple[int, int]:
        return self.module.size

    @property
    def threshold(self) -> float | None:
        value = (self.card.get("threshold") or {}).get("value")
        return None if value is None else float(value)

    def pixels(self, source: ImageSource, strict: bool = True) -> np.ndarray:
        return ink_pixels(source, self.size, strict, self.card.get("architecture", {}).get("config", {}).get("crop", True))

    @property
    def views(self) -> int:
        """Test-time augmentation: the vector is the mean over this many views (the image itself, then fixed
        small distortions), set in the card."""
        return max(1, int(self.card.get("test_time_views", 1)))

    def embed(self, pixels: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """(n, 2H, 2W) ink -> (n, dim) float32, L2-normalised."""
        self.module.eval()
        x = torch.as_tensor(np.asarray(pixels, dtype=np.float32))[:, None]
        with torch.inference_mode():
            out = torch.zeros(len(x), self.module.dim)
            for view in range(self.views):
                # the same distortions for every image and every call: a pair's distance never depends on the batch
                seen = x if view == 0 else random_affine(x, torch.Generator().manual_seed(view), same_for_all=True)
                out += torch.cat([self.module(seen[i : i + batch_size]) for i in range(0, len(x), batch_size)])
            return nn.functional.normalize(out, dim=-1).numpy()

    def encode(self, images: Sequence[ImageSource]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.module.dim), np.float32)
        return self.embed(np.stack([self.pixels(image) for image in images]))

    def try_encode(self, images: Sequence[ImageSource]) -> list[tuple[np.ndarray, Image.Image] | ValueError]:
        """(vector, the ink the encoder saw) per image, or the image's error (SignatureError, ImageError) in its
        place, so one bad image does not stop the batch."""
        results: list = [None] * len(images)
        pixels: dict[int, np.ndarray] = {}
        for k, image in enumerate(images):
            try:
                pixels[k] = self.pixels(image)
            except ValueError as exc:
                results[k] = exc
        if pixels:
            for (k, ink), vector in zip(pixels.items(), self.embed(np.stack(list(pixels.values())))):
                results[k] = (vector, preview(ink))
        return results

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(folder / ENCODER_WEIGHTS_FILE), metadata={"format": ENCODER_FORMAT})
        if self.centres:
            save_file({str(k): torch.from_numpy(np.asarray(c, np.float32)) for k, c in enumerate(self.centres)},
                      str(folder / CENTRES_FILE))
        write_card(folder, self.card)
        return folder


def build_encoder(name: str) -> ConvEncoder:
    return ConvEncoder(architecture(name))


def load_encoder(folder: Path, card: dict, source: str) -> SiameseEncoder:
    """The encoder in `folder` whose card (already read and checked by head.load_head) is `card`."""
    from safetensors.torch import load_file

    weights = folder / ENCODER_WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} holds an encoder card but no {ENCODER_WEIGHTS_FILE}; retrain or re-download it.")
    try:
        state = load_file(str(weights))  # safetensors only: never unpickled
    except Exception as exc:
        raise ValueError(f"{weights} is not a valid safetensors file ({type(exc).__name__}: {exc}); "
                         "retrain or re-download the encoder.") from None
    try:
        config = card["architecture"]["config"]
        module = ConvEncoder(config)
        module.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{weights} does not match the architecture in {folder / 'card.json'} ({exc}); "
                         "retrain or re-download the encoder.") from None
    return SiameseEncoder(module.eval(), card, source, load_centres(folder / CENTRES_FILE))


def load_centres(path: Path) -> list[np.ndarray]:
    """The fused blocks' centres saved by SiameseEncoder.save, [] when there are none."""
    from safetensors.torch import load_file

    if not path.is_file():
        return []
    try:
        state = load_file(str(path))
        return [state[str(k)].numpy() for k in range(len(state))]
    except Exception as exc:
        raise ValueError(f"{path} is not a valid centres file ({type(exc).__name__}: {exc}); retrain or re-download the encoder.") from None
