"""Where a model's forwards run: its own threads ("streams"), with concurrent small calls merged into batches.

Every model call runs on the model's own threads (indexer.device.model_streams: two on a CPU, each with half the
cores, one on a GPU). Called from each request's thread instead, every new thread got an OpenMP team of its own,
and the idle teams' spinning threads took CPU from the ones computing. Big merged batches are split between the
streams and keep both busy, so under load the queue grows into big batches (~5% more requests/s than always two
merged batches at once); a small batch keeps one stream and the coalescer starts the next on the other
(docs/dev/MEASUREMENT-NOTES.md).
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

import torch

from ..device import model_streams
from .batching import Coalescer

T = TypeVar("T")
SMALL_BATCH_ROWS = 2  # model calls this small run on one thread (see threads_for)
MIN_CHUNK_ROWS = 4  # a batch is split between the model's streams only into chunks at least this big
MODEL_THREAD_PREFIX = "twinsight-model"  # the name of every embedder's own model threads


def threads_for(rows: int) -> int | None:
    """Intra-op threads for a call of `rows` rows; None: the stream's share. 1-2 rows run on one thread: off the main
    thread, torch's second OpenMP thread made a single image slower, not faster (EfficientNet-Lite0 33 -> 66
    images/s at batch 1; ViT-B-32 20 -> 22)."""
    return 1 if rows <= SMALL_BATCH_ROWS else None


class ModelStreams:
    """The model's threads, and the coalescer that merges concurrent calls of `forward_batch` into batches of at
    most `max_rows` (TWINSIGHT_MAX_BATCH; 1 turns merging off)."""

    def __init__(self, device: torch.device, forward_batch: Callable[[torch.Tensor], torch.Tensor], max_rows: int):
        self.workers, self.threads = model_streams(device)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=MODEL_THREAD_PREFIX)
        self.coalescer = Coalescer(forward_batch, max_rows=max_rows, lanes=self.workers, lanes_for=self.parts)

    def submit(self, call: Callable[[], T], threads: int | None = None) -> Future:
        """Start a model call on one of the model's threads under inference_mode, with `threads` intra-op threads
        (default: the stream's share); a call made from a model thread (a model call inside one) runs inline."""
        def run() -> T:
            wanted = threads or self.threads
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
        return self._pool.submit(run)

    def call(self, call: Callable[[], T], threads: int | None = None) -> T:
        """`call()` on a model thread, waited for."""
        return self.submit(call, threads).result()

    def parts(self, rows: int) -> int:
        return max(1, min(self.workers, rows // MIN_CHUNK_ROWS))

    def split(self, pixels: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`forward` of a batch, split between the streams when each part keeps at least MIN_CHUNK_ROWS rows
        (smaller batches lose more to per-row inefficiency than they gain: ViT-B-32 on one thread runs 23 images/s
        at batch 1 and 64 at batch 8)."""
        parts = self.parts(len(pixels))
        chunks = pixels.split(math.ceil(len(pixels) / parts)) if parts > 1 else (pixels,)
        futures = [self.submit(lambda chunk=chunk: forward(chunk), threads_for(len(chunk))) for chunk in chunks]
        return torch.cat([future.result() for future in futures])
