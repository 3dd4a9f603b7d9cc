"""Resumable training state without pickle: tensors in one safetensors file, the rest in JSON.

state.safetensors holds the model, the loss's parameters, the best weights so far, AdamW's moments and the
random generator; progress.json the step, history and early-stopping counters, and the run's key (its
settings): a checkpoint of other settings is never resumed. Both are replaced atomically, JSON last.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import write_atomically

STATE_FILE, PROGRESS_FILE = "state.safetensors", "progress.json"


def _prefixed(prefix: str, state: dict) -> dict:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict) -> dict:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


class Checkpoint:
    def __init__(self, folder: Path | None, key: str):
        self.folder, self.key = folder, key
        self.best: dict = {}

    def keep_best(self, model: torch.nn.Module, criterion: torch.nn.Module) -> None:
        self.best = {"best_model": copy.deepcopy(model.state_dict()), "best_loss": copy.deepcopy(criterion.state_dict())}

    def restore_best(self, model: torch.nn.Module, criterion: torch.nn.Module) -> None:
        model.load_state_dict(self.best["best_model"])
        criterion.load_state_dict(self.best["best_loss"])

    def save(self, model, criterion, optimizer: torch.optim.Optimizer, generator: torch.Generator, state: dict) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {**_prefixed("model", model.state_dict()), **_prefixed("loss", criterion.state_dict()),
                   **{k: v for prefix, part in self.best.items() for k, v in _prefixed(prefix, part).items()},
                   "generator": generator.get_state()}
        optimizer_state = optimizer.state_dict()
        for index, moments in optimizer_state["state"].items():
            tensors.update(_prefixed(f"optimizer.{index}", moments))
        write_atomically(self.folder / STATE_FILE, lambda staging: save_file(tensors, str(staging)))
        progress = {"key": self.key, "state": state, "param_groups": optimizer_state["param_groups"]}
        write_atomically(self.folder / PROGRESS_FILE, lambda staging: staging.write_text(json.dumps(progress)))

    def load(self, model, criterion, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict:
        """The saved state (and every tensor restored in place) when a checkpoint of this run exists, else a
        fresh state at step 0."""
        fresh = {"step": 0}
        if self.folder is None or not (self.folder / PROGRESS_FILE).is_file():
            return fresh
        try:
            progress = json.loads((self.folder / PROGRESS_FILE).read_text())
            if progress.get("key") != self.key:
                return fresh  # other settings: start over (the checkpoint is overwritten at the first save)
            tensors = load_file(str(self.folder / STATE_FILE))
        except (OSError, ValueError) as exc:
            raise ValueError(f"The checkpoint in {self.folder} is damaged ({exc}); delete that folder to start over.") from None
        model.load_state_dict(_unprefixed("model", tensors))
        criterion.load_state_dict(_unprefixed("loss", tensors))
        self.best = {prefix: _unprefixed(prefix, tensors) for prefix in ("best_model", "best_loss")}
        optimizer.load_state_dict({
            "state": {int(i): _unprefixed(f"optimizer.{i}", tensors) for i in range(len(progress["param_groups"][0]["params"]))
                      if f"optimizer.{i}.step" in tensors},
            "param_groups": progress["param_groups"],
        })
        generator.set_state(tensors["generator"])
        return progress["state"]

    def remove(self) -> None:
        if self.folder is not None and self.folder.is_dir():
            shutil.rmtree(self.folder)
