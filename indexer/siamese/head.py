"""The Siamese head: a small MLP projection on top of a frozen backbone's embeddings.

Both images go through the same backbone and the same head (shared weights); their distance is the
cosine distance of the head's L2-normalised outputs. Saved as `head.safetensors` plus `card.json`
(backbone spec, loss, data, metrics, calibrated threshold).

A head trained with `fine_tune_blocks = N > 0` also carries its own fine-tuned copy of the backbone's last
N blocks (`top`); it takes the shared backbone's trunk features (`Embedder.trunk_features`) and runs
`top -> pool -> L2 normalise -> projection` (`project_trunk`). The shared backbone is never changed.
Its weights are stored in the same safetensors file, under the `top.` prefix.
"""
from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.tracing import input_signature, trace_checked, tracing_enabled
from .cards import CARD_FILE, write_card
from .encoder import CENTRES_FILE, ENCODER_FORMAT, ENCODER_WEIGHTS_FILE, SiameseEncoder, load_encoder

WEIGHTS_FILE = "head.safetensors"
CARD_FORMAT = "twinsight-siamese-head/1"
TOP_PREFIX = "top."


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(features), dim=-1)


@dataclass
class SiameseHead:
    """A trained head and its card. `card["threshold"]` is a cosine distance: same when distance <= it."""

    module: ProjectionHead
    card: dict = field(default_factory=dict)
    source: str = ""  # where it was loaded from
    top: nn.Module | None = None  # fine-tuned copy of the backbone's last blocks (fine_tune_blocks > 0)
    # project_trunk's forward per trunk size and dtype: a checked trace on a CPU, else eager (_top_forward)
    _forwards: dict = field(default_factory=dict, repr=False, compare=False)
    _forwards_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def backbone(self) -> str:
        return self.card["backbone"]

    @property
    def mode(self) -> str:
        return self.card.get("mode", "general")

    @property
    def threshold(self) -> float | None:
        value = (self.card.get("threshold") or {}).get("value")
        return None if value is None else float(value)

    @property
    def fine_tune_blocks(self) -> int:
        """How many of the backbone's last blocks this head fine-tuned (0: it projects final features)."""
        return int(self.card.get("fine_tune_blocks", 0) or 0)

    def project(self, features: np.ndarray) -> np.ndarray:
        """(n, backbone_dim) final backbone features -> (n, out_dim) float32, L2-normalised."""
        if self.top is not None:
            raise ValueError("This head fine-tuned backbone blocks: give it trunk features with project_trunk().")
        self.module.eval()
        with torch.inference_mode():
            return self.module(torch.as_tensor(np.asarray(features, dtype=np.float32))).numpy()

    def project_trunk(self, trunk: torch.Tensor | np.ndarray) -> np.ndarray:
        """Trunk features (`Embedder.trunk_features(pixels, fine_tune_blocks)`) -> (n, out_dim), L2-normalised."""
        if self.top is None:
            raise ValueError("This head has no fine-tuned blocks: give it final features with project().")
        self.module.eval()
        self.top.eval()
        trunk = torch.as_tensor(trunk, dtype=torch.float32)
        with torch.inference_mode(), torch.jit.optimized_execution(False):  # the graph runs exactly the eager ops
            return self._top_forward(trunk)(trunk).numpy()

    def _top_forward(self, trunk: torch.Tensor):
        """top -> pool -> projection for trunks like `trunk`: on a CPU a trace checked against eager (made once per
        trunk size), as the backbone's forwards are. Eager, beside a busy Python thread (Gradio's), one pair's call
        took 88 ms instead of 4.7: every op retakes the GIL. The graph shares the head's weights."""

        eager = functools.partial(forward_top, self.top, self.module)
        if not tracing_enabled(trunk.device):
            return eager
        key = input_signature((trunk,))  # what the embedder's graphs are keyed and checked on too
        with self._forwards_lock:
            if key not in self._forwards:
                example = (torch.randn(3, *trunk.shape[1:], generator=torch.Generator().manual_seed(0)).to(trunk.dtype),)
                graph = trace_checked(nn.ModuleList([self.top, self.module]), eager, example,
                                      f"Siamese head {self.source or ''}".strip())
                self._forwards[key] = graph if graph is not None else eager
            return self._forwards[key]

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        if self.top is not None:
            state.update({TOP_PREFIX + k: v.detach().cpu().contiguous() for k, v in self.top.state_dict().items()})
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": CARD_FORMAT})
        write_card(folder, self.card)
        return folder


def forward_top(top: nn.Module, module: ProjectionHead, trunk: torch.Tensor) -> torch.Tensor:
    """trunk -> fine-tuned top blocks -> pooled features, L2-normalised as the backbone's own output is ->
    projection. Shared by training and inference so both run the same computation."""
    return module(nn.functional.normalize(top(trunk), dim=-1))


def top_architecture(backbone: str, blocks: int) -> nn.Module:
    """Untrained top blocks of `backbone` in the layout a saved head's `top.` weights load into."""
    from ..models.base import FINE_TUNE_BACKBONES

    if backbone == "effnet-lite0":
        from ..models.effnet import top_architecture as effnet_top

        return effnet_top(blocks)
    if backbone.startswith("open_clip:"):
        from ..models.open_clip_backend import top_architecture as open_clip_top

        return open_clip_top(backbone, blocks)
    raise ValueError(f"Heads with fine-tuned blocks support the backbones {', '.join(FINE_TUNE_BACKBONES)}, not {backbone}.")


def load_head(path_or_repo: str | Path) -> "SiameseHead | SiameseEncoder":
    """Load a head, or an end-to-end trained encoder (indexer.siamese.encoder; told apart by its card's format),
    from a folder or a hub repo id (downloaded once into the hub cache)."""
    from safetensors.torch import load_file

    folder = Path(path_or_repo)
    if not folder.is_dir():
        text = str(path_or_repo)
        if folder.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
            raise FileNotFoundError(f"No Siamese head folder at {path_or_repo}; give a folder with {CARD_FILE} or a hub repo id.")
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(text, allow_patterns=[WEIGHTS_FILE, CARD_FILE, ENCODER_WEIGHTS_FILE, CENTRES_FILE]))
        except Exception as exc:
            raise FileNotFoundError(f"Could not download the Siamese head {text!r} from the hub: {exc}") from exc
    card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
    if not card_path.is_file():
        raise FileNotFoundError(f"{folder} is not a Siamese head or encoder: it needs {CARD_FILE} beside its weights.")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{card_path} is not valid JSON ({exc}); retrain or re-download the head.") from None

    if isinstance(card, dict) and card.get("format") == ENCODER_FORMAT:
        return load_encoder(folder, card, str(path_or_repo))
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise ValueError(f"{card_path} is not a Twinsight head card (format {found!r}, expected {CARD_FORMAT} or {ENCODER_FORMAT}).")
    if not weights_path.is_file():
        raise FileNotFoundError(f"{folder} is not a Siamese head: it needs {WEIGHTS_FILE} and {CARD_FILE}.")
    try:
        # safetensors only: a pickle (torch.save) under this name is refused unread, never unpickled.
        state = load_file(str(weights_path))
    except Exception as exc:  # SafetensorError, OSError: the file is not a safetensors file
        raise ValueError(f"{weights_path} is not a valid safetensors file ({type(exc).__name__}: {exc}); "
                         "retrain or re-download the head (heads are saved with safetensors, never pickle).") from None
    top_state = {k[len(TOP_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(TOP_PREFIX)}
    try:
        arch = card["architecture"]
        module = ProjectionHead(arch["in_dim"], arch["hidden_dim"], arch["out_dim"], arch.get("dropout", 0.0))
        module.load_state_dict(state)
        head = SiameseHead(module.eval(), card, source=str(path_or_repo))
        if head.fine_tune_blocks:
            head.top = top_architecture(head.backbone, head.fine_tune_blocks)
            head.top.load_state_dict(top_state)
            head.top.eval()
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{weights_path} does not match the architecture in {card_path} ({exc}); "
                         "retrain or re-download the head.") from None
    if top_state and not head.fine_tune_blocks:
        raise ValueError(f"{weights_path} holds fine-tuned blocks but {card_path} has no fine_tune_blocks.")
    return head
