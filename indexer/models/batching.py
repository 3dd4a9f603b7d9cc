"""Coalesce concurrent forward calls into one batch.

While one batch runs, requests from other threads queue up; the next caller to find the model idle takes
all of them (up to `max_rows`) in a single forward. No timer, so a lone request never waits for company.
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


@dataclass(eq=False)
class Coalescer:
    run: Callable[[torch.Tensor], torch.Tensor]
    max_rows: int = 64
    batches_run: int = 0  # for tests and benchmarks: how many forwards served how many requests
    requests_served: int = 0
    _queue: list = field(default_factory=list)
    _busy: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        request = _Request(rows)
        with self._cond:
            self._queue.append(request)
        while True:
            with self._cond:
                while not request.done and self._busy:
                    self._cond.wait()
                if request.done:
                    if request.error is not None:
                        raise request.error
                    return request.result
                self._busy = True
                batch = self._take()
            self._run(batch)

    def _take(self) -> list[_Request]:
        batch, total = [], 0
        while self._queue and (not batch or total + len(self._queue[0].rows) <= self.max_rows):
            request = self._queue.pop(0)
            batch.append(request)
            total += len(request.rows)
        return batch

    def _run(self, batch: list[_Request]) -> None:
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
            self._busy = False
            self._cond.notify_all()
