"""Coalesce concurrent forward calls into one batch.

While the model is busy, requests from other threads queue up; the next caller to find a lane free takes all
of them (up to `max_rows`) in a single forward. No timer, so a lone request never waits for company. A lane is
one of the model's streams: a batch big enough to be split takes them all, so under load the queue grows into
big batches; a small one takes one, and the next requests start at once on another. (With one batch at a time,
a small batch left a stream idle: 4 clients on ViT-B-32 got 0.74-0.83x the throughput of unmerged concurrent
calls; lanes gave +42% / +28% there, docs/dev/MEASUREMENT-NOTES.md.)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(eq=False)
class _Request:
    rows: torch.Tensor
    result: torch.Tensor | None = None
    error: BaseException | None = None
    done: bool = False
    taken: bool = False  # in a batch that is running


@dataclass(eq=False)
class Coalescer:
    run: Callable[[torch.Tensor], torch.Tensor]
    max_rows: int = 64
    lanes: int = 1  # merged batches that may run at once: the model's streams
    lanes_for: Callable[[int], int] = lambda rows: 1  # lanes a batch of this many rows keeps busy
    batches_run: int = 0  # for tests and benchmarks: how many forwards served how many requests
    requests_served: int = 0
    _queue: list = field(default_factory=list)
    _lanes_busy: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        request = _Request(rows)
        with self._cond:
            self._queue.append(request)
        while True:
            with self._cond:
                while not request.done and (request.taken or self._lanes_busy >= self.lanes):
                    self._cond.wait()
                if request.done:
                    if request.error is not None:
                        raise request.error
                    return request.result
                batch = self._take()
                held = max(1, min(self.lanes, self.lanes_for(sum(len(r.rows) for r in batch))))
                self._lanes_busy += held
            self._run(batch, held)

    def _take(self) -> list[_Request]:
        batch, total = [], 0
        while self._queue and (not batch or total + len(self._queue[0].rows) <= self.max_rows):
            request = self._queue.pop(0)
            request.taken = True
            batch.append(request)
            total += len(request.rows)
        return batch

    def _run(self, batch: list[_Request], held: int) -> None:
        try:
            output = self.run(torch.cat([r.rows for r in batch]) if len(batch) > 1 else batch[0].rows)
            for request, part in zip(batch, output.split([len(r.rows) for r in batch])):
                request.result = part
        except BaseException as exc:  # every waiter gets the error, nobody hangs
            for request in batch:
                request.error = exc
        with self._cond:
            for request in batch:
                request.done = True
            self.batches_run += 1
            self.requests_served += len(batch)
            self._lanes_busy -= held
            self._cond.notify_all()
