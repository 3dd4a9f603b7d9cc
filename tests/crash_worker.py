"""Helper process for tests/test_reliability_crash.py: writes an index until it is killed with SIGKILL.

Run as `python crash_worker.py`: it imports the library once, then serves trials read from stdin, one JSON
object a line: {"mode": "add"|"commit"|"save", "path": DIR, "acks": FILE, "kill_at": null|POINT}, or
{"mode": "build", "dataset": FOLDER, "path": DIR} (a build that checkpoints after every batch). Each trial is a
forked child (so no trial pays the import again) that opens the index and loops (bounded):
  add:  add BATCH vectors labelled "gen G" (deterministic from G), save, then append G to the acks file;
  commit: the same with commit() instead of save(), as the app does (journal appends, a full save every
        JOURNAL_ROUNDS rounds);
  save: save the unchanged index, then append the current generation to the acks file.
The parent prints "pid N" when the child starts and "exit N STATUS" when it is gone.
kill_at makes the child SIGKILL itself at one point inside save() or commit() (deterministic crash injection);
without it the test kills the child at a random moment.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from indexer.index import hnsw_files as index_module  # noqa: E402  (saves: their writes are what is killed)
from indexer.index import journal as journal_module  # noqa: E402
from indexer.index import GalleryIndex  # noqa: E402

BATCH = 50
MAX_ROUNDS = 400  # bounded: a trial ends by itself if nobody kills it
JOURNAL_ROUNDS = 3  # commit mode: the journal holds up to 3 rounds, the 4th commit folds it into a full save


def vectors_for(generation: int, dim: int) -> np.ndarray:
    vectors = np.random.default_rng(generation).normal(size=(BATCH, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def generation_of(index: GalleryIndex) -> int:
    return max((int(label.split()[1]) for label in index.labels() if label.startswith("gen ")), default=0)


def _die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def inject(kill_at: str) -> None:
    """SIGKILL ourselves at `kill_at` during the next save."""
    if kill_at == "mid-write":  # files half written into the temp directory
        index_module.pq.write_table = _die
    elif kill_at == "before-meta":  # every data file written, meta.json not yet
        original = Path.write_text
        Path.write_text = lambda self, *a, **k: _die() if self.name == index_module.META_FILE else original(self, *a, **k)
    elif kill_at in ("between-renames", "after-renames"):
        real = os.rename

        def rename(src, dst):
            real(src, dst)
            if kill_at == "between-renames" and ".old-" in Path(dst).name:  # old index aside, new not in place
                _die()
            if kill_at == "after-renames" and ".tmp-" in Path(src).name:  # new index in place, old not removed
                _die()

        os.rename = rename  # this forked child only
    elif kill_at == "mid-journal":  # half of the journal record written, not fsynced
        journal_module._write_all = lambda fd, data: (os.write(fd, data[: len(data) // 2]), _die())
    elif kill_at == "after-journal":  # the record written and fsynced, the commit not yet acknowledged
        real_append = journal_module.append
        journal_module.append = lambda *args: (real_append(*args), _die())
    else:
        raise ValueError(f"unknown kill point {kill_at!r}")


def trial(mode: str, path: str, acks: str, kill_at: str | None) -> None:
    index = GalleryIndex.load(path)
    index.journal_limit = JOURNAL_ROUNDS * BATCH
    generation = generation_of(index)
    if kill_at:
        inject(kill_at)
    with open(acks, "a") as ack:
        for _ in range(MAX_ROUNDS):
            if mode in ("add", "commit"):
                index.add_vectors(vectors_for(generation + 1, index.dim), labels=[f"gen {generation + 1}"] * BATCH)
                generation += 1
            index.commit() if mode == "commit" else index.save()
            ack.write(f"{generation}\n")
            ack.flush()  # in the kernel: survives SIGKILL


def build(dataset: str, path: str) -> None:
    """An index build that checkpoints after every batch (the test kills it part-way)."""
    from tiny_models import register_tiny_open_clip

    from indexer import build_index, load_embedder

    embedder = load_embedder(register_tiny_open_clip())
    preprocess = embedder.preprocess

    def paced(image):
        # 10 ms an image: the whole build takes over a second, so the test's polling sees it part-way on any machine
        # (unpaced, the 120 tiny images were sometimes all in before the kill landed).
        time.sleep(0.01)
        return preprocess(image)

    embedder.preprocess = paced
    build_index(dataset, model=embedder, out=path, batch_size=4, checkpoint_seconds=0, workers=1)


def main() -> None:
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                if job["mode"] == "build":
                    build(job["dataset"], job["path"])
                else:
                    trial(job["mode"], job["path"], job["acks"], job.get("kill_at"))
            finally:
                os._exit(0)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {pid} {status}", flush=True)


if __name__ == "__main__":
    main()
