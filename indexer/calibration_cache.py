"""Self-calibrated thresholds kept on disk between runs: start-up embeds the generated calibration pairs once per
model, not once per start. Keyed by the model's weights and precision, so other weights never reuse one."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from .atomic import write_atomically
from .build import default_index_root
from .calibration import Calibration
from .config import settings

log = logging.getLogger(__name__)

# Bump when the generated calibration pairs (indexer.augment) or the way they are scored change.
SELF_CALIBRATION_VERSION = 1


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A cheap identity of a model's weights: names, shapes and 64 strided values of every tensor."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().reshape(-1)
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def cache_file(embedder, mode: str) -> Path | None:
    """Where a self-calibration is kept between runs (start-up embeds the generated pairs once per model, not
    once per start): keyed by the model's weights and precision, so other weights never reuse it."""
    model = getattr(embedder, "model", None)
    if not isinstance(model, torch.nn.Module) or not settings().calibration_cache:
        return None
    key = json.dumps([SELF_CALIBRATION_VERSION, embedder.name, str(embedder.dtype), mode,
                      weights_fingerprint(model)])
    return default_index_root() / "_calibrations" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def read(path: Path | None) -> Calibration | None:
    if path is None or not path.is_file():
        return None
    try:
        return Calibration(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):  # damaged or from another version: calibrate again
        return None


def write(path: Path | None, calibration: Calibration) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda staging: staging.write_text(json.dumps(calibration.to_dict())))
    except OSError as exc:  # a read-only cache costs a calibration per start, nothing else
        log.warning("could not keep the self-calibration in %s: %s", path, exc)
