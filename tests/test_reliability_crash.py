"""SIGKILL during an index save, during an add (saved, or committed to the journal) and during a build
(tests/crash_worker.py does the writing).

After every kill the index directory loads with its checksums verified, and holds exactly the state before
or the state after the interrupted operation; an interrupted build resumes to the same index as a clean one.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crash_worker import BATCH, JOURNAL_ROUNDS, generation_of, vectors_for
from indexer import GalleryIndex, build_index, open_index
from indexer.index import read_meta

RANDOM_KILLS = 6  # per mode
KILL_POINTS = ("mid-write", "before-meta", "between-renames", "after-renames")
JOURNAL_KILL_POINTS = {"mid-journal": 0, "after-journal": 1}  # -> the generation found after the kill


class Worker:
    """The crash worker process: imports once, forks one child per trial."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crash_worker.py"))],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def start(self, **job) -> int:
        self.process.stdin.write(json.dumps(job) + "\n")
        line = self.process.stdout.readline()
        assert line.startswith("pid "), line
        return int(line.split()[1])

    def wait(self, pid: int) -> int:
        line = self.process.stdout.readline()
        assert line.startswith(f"exit {pid} "), line
        return int(line.split()[2])

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


@pytest.fixture
def index_dir(tmp_path, tiny_clip):
    """Generation 0: 2000 vectors and two images stored inside the index directory."""
    index = GalleryIndex(tiny_clip.dim, tiny_clip.name, embedder=tiny_clip)
    rng = np.random.default_rng(1)
    index.add_vectors(rng.normal(size=(2000, tiny_clip.dim)).astype(np.float32), labels=["gen 0"] * 2000)
    index.add([Image.new("RGB", (10, 10), (250, 0, 0)), Image.new("RGB", (10, 10), (0, 0, 250))], labels=["stored"] * 2)
    return index.save(tmp_path / "ix")


def check(path: Path, allowed_generations: set[int]) -> int:
    """The directory loads (checksums verified), is one consistent generation, and its data is exact."""
    meta = read_meta(path)
    assert meta["checksum"] == hashlib.sha256(json.dumps(meta["files"], sort_keys=True).encode()).hexdigest()
    index = open_index(path, load_model=False)  # verifies every file's sha256
    generation = generation_of(index)
    assert generation in allowed_generations, (generation, allowed_generations)
    assert len(index) == 2002 + BATCH * generation
    for g in range(1, generation + 1):
        ids = [i for i in index.ids if index.get(i).label == f"gen {g}"]
        np.testing.assert_allclose(index.vectors(ids), vectors_for(g, index.dim), atol=1e-6)
    stored = [i for i in index.ids if index.get(i).label == "stored"]
    assert [index.image(i).getpixel((0, 0)) for i in stored] == [(250, 0, 0), (0, 0, 250)]
    return generation


def acked(acks: Path) -> int | None:
    lines = acks.read_text().split() if acks.exists() else []
    return int(lines[-1]) if lines else None


@pytest.mark.parametrize("mode", ["add", "commit", "save"])
def test_random_sigkill_during_add_and_save(worker, index_dir, tmp_path, mode):
    rng = random.Random(7)
    generation, outcomes = 0, {"before": 0, "after": 0}
    acks = tmp_path / "acks"
    for trial in range(RANDOM_KILLS):
        pid = worker.start(mode=mode, path=str(index_dir), acks=str(acks))
        if trial % 3 == 0:  # early: while it opens the index or does its first add and save
            time.sleep(rng.uniform(0.0, 0.3))
        else:  # once it has acknowledged a save (bounded wait): mid-add or mid-save, a round takes ~0.1 s
            deadline = time.monotonic() + 15
            while acked(acks) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2))
        os.kill(pid, signal.SIGKILL)
        assert worker.wait(pid) == signal.SIGKILL, "the child ended before it was killed"
        last = acked(acks)
        before = generation if last is None else last  # the last acknowledged state
        allowed = {before, before + 1} if mode != "save" else {generation}
        found = check(index_dir, allowed)
        assert last is None or found >= last, "an acknowledged addition was lost"
        outcomes["before" if found == before else "after"] += 1
        generation = found
        acks.unlink(missing_ok=True)
    print(f"\n{mode}: {RANDOM_KILLS} SIGKILLs, final generation {generation}, states {outcomes}")
    if mode != "save":
        assert generation >= 3  # most kills landed after additions were acknowledged
    if mode == "commit":
        assert generation > JOURNAL_ROUNDS  # so commits both appended to the journal and folded it


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_sigkill_at_each_step_of_a_save(worker, index_dir, tmp_path, kill_at):
    """Deterministic: the child kills itself at one step of save(); before or after, never in between."""
    pid = worker.start(mode="add", path=str(index_dir), acks=str(tmp_path / "acks"), kill_at=kill_at)
    assert worker.wait(pid) == signal.SIGKILL
    assert acked(tmp_path / "acks") is None  # it died inside its first save
    expected = 1 if kill_at == "after-renames" else 0
    assert check(index_dir, {expected}) == expected
    assert not list(tmp_path.glob(".ix.old-*"))  # a restored or stale backup is cleaned up by the load
    # The next writer saves over whatever the crash left.
    survivor = open_index(index_dir, load_model=False)
    survivor.add_vectors(vectors_for(expected + 1, survivor.dim), labels=[f"gen {expected + 1}"] * BATCH)
    survivor.save()
    assert check(index_dir, {expected + 1}) == expected + 1


@pytest.mark.parametrize("kill_at", JOURNAL_KILL_POINTS)
def test_sigkill_at_each_step_of_a_commit(worker, index_dir, tmp_path, kill_at, caplog):
    """A record half written is ignored (it was never acknowledged); one fsynced is kept."""
    pid = worker.start(mode="commit", path=str(index_dir), acks=str(tmp_path / "acks"), kill_at=kill_at)
    assert worker.wait(pid) == signal.SIGKILL
    assert acked(tmp_path / "acks") is None  # it died inside its first commit
    expected = JOURNAL_KILL_POINTS[kill_at]
    assert check(index_dir, {expected}) == expected
    survivor = open_index(index_dir, load_model=False)
    survivor.add_vectors(vectors_for(expected + 1, survivor.dim), labels=[f"gen {expected + 1}"] * BATCH)
    survivor.commit()
    caplog.clear()
    assert check(index_dir, {expected + 1}) == expected + 1
    assert "torn" not in caplog.text  # the survivor's commit cut off what the crash left


def test_sigkilled_build_resumes(worker, tmp_path, tiny_clip):
    from tiny_models import make_gallery_images

    folder = tmp_path / "photos"
    for i, image in enumerate(make_gallery_images(120, seed=3, size=24)):
        (folder / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"class{i % 3}" / f"{i:03d}.png")
    out = tmp_path / "ix"
    pid = worker.start(mode="build", dataset=str(folder), path=str(out))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait for a checkpoint part-way (a journal record), then kill
        try:
            if len(open_index(out, load_model=False)) >= 16:
                break
        except Exception:  # noqa: BLE001 - not written yet
            pass
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    assert worker.wait(pid) == signal.SIGKILL, "the build finished before it was killed"
    partial = open_index(out, tiny_clip)
    assert 16 <= len(partial) < 120 and partial.extra.get("complete") is False

    resumed = build_index(folder, model=tiny_clip, out=out)
    assert resumed.build_report.resumed_from == len(partial) and resumed.build_report.embedded == 120 - len(partial)
    clean = build_index(folder, model=tiny_clip, out=tmp_path / "clean")
    sources = [resumed.get(i).source for i in resumed.ids]
    assert len(set(sources)) == 120 and sorted(sources) == sorted(clean.get(i).source for i in clean.ids)
    # Items embedded before the kill are kept as they were (the killed process had its own random tiny
    # model, so they are compared with the checkpoint); items embedded after the resume match a clean build.
    np.testing.assert_array_equal(resumed.vectors(partial.ids), partial.vectors())
    by_source = {clean.get(i).source: v for i, v in zip(clean.ids, clean.vectors())}
    new_ids = [i for i in resumed.ids if i not in set(partial.ids)]
    np.testing.assert_allclose(resumed.vectors(new_ids), np.stack([by_source[resumed.get(i).source] for i in new_ids]), atol=1e-4)
    reopened = open_index(out, tiny_clip)
    assert len(reopened) == 120 and reopened.extra.get("complete") is True
