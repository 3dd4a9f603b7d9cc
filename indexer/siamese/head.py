"""The Siamese head: a small MLP projection on top of a frozen backbone's embeddings.

Both images go through the same backbone and the same head (shared weights); their distance is the
cosine distance of the head's L2-normalised outputs. Saved as `head.safetensors` plus `card.json`
(backbone spec, loss, data, metrics, calibrated threshold).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS_FILE = "head.safetensors"
CARD_FILE = "card.json"
CARD_FORMAT = "twinsight-siamese-head/1"


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

    def project(self, features: np.ndarray) -> np.ndarray:
        """(n, backbone_dim) -> (n, out_dim) float32, L2-normalised."""
        self.module.eval()
        with torch.inference_mode():
            return self.module(torch.as_tensor(np.asarray(features, dtype=np.float32))).numpy()

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": CARD_FORMAT})
        (folder / CARD_FILE).write_text(json.dumps(self.card, indent=2, default=_json_default) + "\n", encoding="utf-8")
        return folder


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_head(path_or_repo: str | Path) -> SiameseHead:
    """Load a head from a folder, or from a hub repo id (downloaded once into the hub cache)."""
    from safetensors.torch import load_file

    folder = Path(path_or_repo)
    if not folder.is_dir():
        text = str(path_or_repo)
        if folder.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
            raise FileNotFoundError(f"No Siamese head folder at {path_or_repo}; give a folder with {CARD_FILE} or a hub repo id.")
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(text, allow_patterns=[WEIGHTS_FILE, CARD_FILE]))
        except Exception as exc:
            raise FileNotFoundError(f"Could not download the Siamese head {text!r} from the hub: {exc}") from exc
    card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
    if not card_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{folder} is not a Siamese head: it needs {WEIGHTS_FILE} and {CARD_FILE}.")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{card_path} is not valid JSON ({exc}); retrain or re-download the head.") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise ValueError(f"{card_path} is not a Twinsight head card (format {found!r}, expected {CARD_FORMAT}).")
    try:
        # safetensors only: a pickle (torch.save) under this name is refused unread, never unpickled.
        state = load_file(str(weights_path))
    except Exception as exc:  # SafetensorError, OSError: the file is not a safetensors file
        raise ValueError(f"{weights_path} is not a valid safetensors file ({type(exc).__name__}: {exc}); "
                         "retrain or re-download the head (heads are saved with safetensors, never pickle).") from None
    try:
        arch = card["architecture"]
        module = ProjectionHead(arch["in_dim"], arch["hidden_dim"], arch["out_dim"], arch.get("dropout", 0.0))
        module.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{weights_path} does not match the architecture in {card_path} ({exc}); "
                         "retrain or re-download the head.") from None
    return SiameseHead(module.eval(), card, source=str(path_or_repo))
