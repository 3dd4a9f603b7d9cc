"""Stress: 8 threads searching while 2 threads add (and commit, as the app's add does: journal appends, folded into
a full save now and then) and one more saves, a fixed number of times each (counts, not a time budget, so a slow
machine runs the same test). No exception; every acknowledged addition is present after a reload, nothing else is;
scores of unchanged items never change."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from indexer import GalleryIndex, open_index

SEARCHERS, ADDERS = 8, 2
SEARCHES, ADDS, SAVES = 10, 6, 4  # per thread; searchers go on until the writers are done as well


def test_concurrent_search_add_save(tmp_path, tiny_clip):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, tiny_clip.dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = GalleryIndex(tiny_clip.dim, tiny_clip.name, embedder=tiny_clip)
    base_ids = index.add_vectors(base, labels=[f"base {i % 5}" for i in range(len(base))])
    index.add([Image.new("RGB", (16, 16), (200, 10, 10))], labels=["stored image"])  # lives in images/
    path = index.save(tmp_path / "ix")
    index.journal_limit = 40  # commits both append to the journal and fold it into full saves
    queries = rng.normal(size=(16, tiny_clip.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    expected = queries @ base.T  # the score of every (query, base item): must never change

    stop = threading.Event()
    errors: list[BaseException] = []
    acknowledged: dict[int, np.ndarray] = {}  # id -> vector, for additions whose add+commit returned
    counts = {"searches": 0, "checked_scores": 0, "images": 0, "adds": 0, "saves": 0}
    count_lock = threading.Lock()

    def bump(key, n=1):
        with count_lock:
            counts[key] += n

    writers_left = threading.Semaphore(0)  # released once per writer thread that finished
    writers_done = threading.Event()

    def guarded(body, times=None):
        def run(worker):
            done = 0
            try:
                while not stop.is_set() and (done < (times or SEARCHES) or (times is None and not writers_done.is_set())):
                    body(worker)
                    done += 1
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                errors.append(exc)
                stop.set()
            finally:
                if times is not None:
                    writers_left.release()
        return run

    @guarded
    def searcher(worker):
        q = worker % len(queries)
        exact = worker % 2 == 0  # half exact, half through the hnsw graph
        label_filter = f"base {worker % 5}" if worker in (3, 7) else None
        hits = index.search(vector=queries[q], k=10, exact=exact, label_filter=label_filter)
        assert len(hits) == 10
        assert all(a.score >= b.score - 1e-6 for a, b in zip(hits, hits[1:]))
        checked = 0
        for hit in hits:
            if hit.id < len(base_ids):
                assert abs(hit.score - expected[q, hit.id]) < 1e-4, (hit, expected[q, hit.id])
                checked += 1
            if hit.label == "stored image":
                assert index.image(hit.id).size == (16, 16)
                bump("images")
        # An item stored inside the index directory stays readable while saves swap the directory.
        assert index.image(len(base_ids)).size == (16, 16)
        bump("images")
        bump("searches")
        bump("checked_scores", checked)

    def adder(worker):
        local = np.random.default_rng(100 + worker + counts["adds"])
        if counts["adds"] % 3 == 0:
            ids = index.add([Image.fromarray(local.integers(0, 255, (12, 12, 3), dtype=np.uint8))], labels=[f"added {worker}"])
        else:
            ids = index.add_vectors(local.normal(size=(4, tiny_clip.dim)).astype(np.float32), labels=[f"added {worker}"] * 4)
        vectors = index.vectors(ids)
        index.commit()  # the app commits before it acknowledges an addition
        for item_id, vector in zip(ids, vectors):
            acknowledged[item_id] = vector
        bump("adds")

    def saver(_):
        index.save()
        bump("saves")
        time.sleep(0.05)

    threads = [threading.Thread(target=guarded(searcher), args=(w,)) for w in range(SEARCHERS)]
    writers = [threading.Thread(target=guarded(adder, ADDS), args=(w,)) for w in range(ADDERS)]
    writers.append(threading.Thread(target=guarded(saver, SAVES), args=(0,)))
    for thread in threads + writers:
        thread.start()
    for _ in writers:
        if not writers_left.acquire(timeout=300):
            break
    writers_done.set()
    for thread in threads + writers:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads + writers), "a thread hung (deadlock?)"
    if errors:
        raise errors[0]
    assert counts["adds"] == ADDERS * ADDS and counts["saves"] == SAVES, counts
    assert counts["searches"] >= SEARCHERS * SEARCHES and counts["checked_scores"] > 0 and counts["images"] > 0, counts

    reloaded = open_index(path, tiny_clip)  # checksums verified
    assert set(reloaded.ids) == set(base_ids) | {len(base_ids)} | set(acknowledged)  # nothing lost, nothing extra
    ids = sorted(acknowledged)
    np.testing.assert_allclose(reloaded.vectors(ids), np.stack([acknowledged[i] for i in ids]), atol=1e-6)
    np.testing.assert_allclose(reloaded.vectors(base_ids), base, atol=1e-6)
    for q, query in enumerate(queries[:4]):
        for hit in reloaded.search(vector=query, k=20, exact=True):
            if hit.id < len(base_ids):
                assert hit.score == pytest.approx(expected[q, hit.id], abs=1e-4)
    stored = [i for i in reloaded.ids if reloaded.get(i).source.startswith("index:")]
    assert all(reloaded.image(i).size in {(12, 12), (16, 16)} for i in stored)
    print(f"\nstress: {counts}, acknowledged additions {len(acknowledged)}, reloaded {len(reloaded)} items")
