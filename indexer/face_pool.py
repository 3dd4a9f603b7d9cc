"""A fixed set of interchangeable workers lent to one caller at a time, and a guard so that one result is computed once
while others asking for it wait.

Generic on purpose (no dlib here): indexer.face fills the pool with its dlib worker processes, one per core, so the
two images of a pair are described at the same time instead of one after the other.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Generic, Hashable, Iterator, Protocol, Sequence, TypeVar

T = TypeVar("T")
V = TypeVar("V")


class Pool(Generic[T]):
    """`members`, each lent to one caller at a time (`checkout`); a caller waits while every member is busy.

    Members are handed out in turn (first in, first out), so work spreads over all of them."""

    def __init__(self, members: Sequence[T]):
        if not members:
            raise ValueError("a pool needs at least one member")
        self.members: tuple[T, ...] = tuple(members)
        self._idle: queue.SimpleQueue[T] = queue.SimpleQueue()
        for member in self.members:
            self._idle.put(member)

    @classmethod
    def start(cls, make: Callable[[], T], size: int, close: Callable[[T], None]) -> "Pool[T]":
        """A pool of `size` members made by `make`, made at the same time: a dlib worker spends most of its ~0.6 s
        start loading models on one core, so two start in about the time of one. If any fails, those made are
        closed and the first failure (in member order) is raised."""
        if size == 1:
            return cls([make()])
        with ThreadPoolExecutor(size, thread_name_prefix="pool-start") as starter:
            futures = [starter.submit(make) for _ in range(size)]
        made = [future.result() for future in futures if future.exception() is None]
        failed = [future.exception() for future in futures if future.exception() is not None]
        if failed:
            for member in made:
                close(member)
            raise failed[0]
        return cls(made)

    def __len__(self) -> int:
        return len(self.members)

    @contextlib.contextmanager
    def checkout(self) -> Iterator[T]:
        """An idle member for the block's duration (waiting for one if all are busy); given back even on errors."""
        member = self._idle.get()
        try:
            yield member
        finally:
            self._idle.put(member)


class _Cache(Protocol[V]):
    def get(self, key: Hashable) -> V | None: ...

    def put(self, key: Hashable, value: V) -> None: ...


class SingleFlight:
    """Computes each missing cache entry once: a caller asking for a key that another caller is computing waits for
    that result instead of computing it again (the same image uploaded twice at once takes one worker, not two).

    If the computing caller fails, nothing is cached and each waiting caller tries for itself."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: dict[Hashable, threading.Event] = {}

    def get(self, cache: _Cache[V], key: Hashable, compute: Callable[[], V]) -> V:
        slot = (id(cache), key)  # one guard may serve several caches
        while True:
            found = cache.get(key)
            if found is not None:
                return found
            with self._lock:
                running = self._running.get(slot)
                if running is None:
                    done = self._running[slot] = threading.Event()
            if running is not None:
                running.wait()
                continue  # cached now, or its caller failed and this one tries
            try:
                # Looked up again as the owner: a caller that finished between the first look and taking the key
                # has cached its result (it caches before it lets go of the key).
                found = cache.get(key)
                if found is None:
                    found = compute()
                    cache.put(key, found)
                return found
            finally:
                with self._lock:
                    del self._running[slot]
                done.set()
