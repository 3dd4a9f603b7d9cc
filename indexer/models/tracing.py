"""Forwards as TorchScript traces, each kept only if it gives exactly the eager outputs.

Why: eager PyTorch releases and retakes the GIL around each of a forward's ~200 ops. While Gradio's event loop or
request threads run Python, every retake waits: EfficientNet-Lite0 at batch 1 beside one busy Python thread fell
from 54 to 1 images/s eager, and ran 11 traced (64 alone; docs/BENCHMARKS.md). The graph runs the same ATen ops,
so results are bit-identical. GPUs keep the eager forward: not measured there.
"""
from __future__ import annotations

import logging
import warnings
from typing import Callable

import torch

from ..config import settings

log = logging.getLogger(__name__)

# Texts the text tower is traced and checked on. The first fills the tower's whole context (it is cut), and is
# checked alone: a model may skip its padding mask when no row is padded, a branch the trace must not hide.
TRACE_TEXTS = ("a long caption " + "of a photo of a dog on a beach at sunset, " * 40, "a cat", "a diagram of a bicycle.")


class _Forward(torch.nn.Module):
    """A forward as a module of its model, so a trace holds the weights as shared parameters, not constants (no
    second copy)."""

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


def input_signature(inputs: tuple[torch.Tensor, ...]) -> tuple:
    """What a graph's inputs must match: each one's size past the batch dimension, and dtype."""
    return tuple((tuple(x.shape[1:]), x.dtype) for x in inputs)


class TracedForwards:
    """Checked graphs by key, each with the input signature it was checked at."""

    def __init__(self) -> None:
        self.graphs: dict[str, torch.jit.ScriptModule] = {}
        self._inputs: dict[str, tuple] = {}

    def clear(self) -> None:
        self.graphs, self._inputs = {}, {}

    def add(self, key: str, graph: torch.jit.ScriptModule, inputs: tuple[torch.Tensor, ...]) -> None:
        self._inputs[key] = input_signature(inputs)  # the signature first: run() reads the two without a lock
        self.graphs[key] = graph

    def run(self, key: str, eager: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
        """The graph for inputs of the size it was checked at, else `eager` (another size could take a branch
        the trace did not record)."""
        graph = self.graphs.get(key)
        if graph is None or input_signature(inputs) != self._inputs[key]:
            return eager(*inputs)
        return graph(*inputs)
