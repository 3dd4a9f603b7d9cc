"""build_index: stream a gallery source through the embedder into a gallery index, resumably.

Pipeline: the main thread reads records (cheap: arrow rows or file paths) and hands each to a pool of
worker threads that decode, EXIF-rotate and preprocess it (PIL and torchvision release the GIL), while the
main thread runs the model on the previous batch. `prefetch` batches are in flight, so the model is not
waiting on JPEG decoding. Every `checkpoint_seconds` the index is committed (journalled) with the next row to
embed, and an interrupted build (exception, Ctrl-C) commits what it has; the next build of the same source
continues there.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..hamming import CodeKind
from ..images import load_image
from ..index import (DEFAULT_TARGET_RECALL, EXACT_SEARCH_BELOW, HNSW, JOURNAL_LIMIT, META_FILE, Gallery, GalleryIndex,
                     HnswParams, IndexMismatchError, StoreSpec, parse_store)
from ..sources import AUTO, SOURCE_IDENTITY, GallerySource, Record, SourceKind, open_source
from .milvus import open_or_create_milvus
from .paths import index_dir_for
from ..errors import UserInputError

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


@dataclass
class BuildReport:
    out: Path
    total: int  # rows of the source this build covers (after --limit)
    count: int  # items in the index afterwards
    embedded: int  # images embedded by this call
    skipped: int  # unreadable images skipped by this call
    resumed_from: int  # items already in the index when this call started (not re-embedded)
    seconds: float
    model_seconds: float = 0.0  # time the pipeline waited for embeddings (the model is the slow step: ~all of it)
    decode_wait_seconds: float = 0.0  # time the model step waited for decoding (near 0: decoding keeps up)
    skipped_examples: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def _prepare(embedder, record: Record) -> torch.Tensor | str:
    """Decode + preprocess one record in a worker thread; an error message instead of raising."""
    try:
        image = record.image() if callable(record.image) else record.image  # lazy sources decode here too
        return embedder.preprocess(load_image(image, draft_side=embedder.draft_side))
    except Exception as exc:  # one bad file must not stop a 100k-image build
        return f"row {record.row} ({record.source}): {exc}"


def _batches(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while batch := list(islice(records, size)):
        yield batch


def build_index(
    dataset: str | os.PathLike,
    *,
    model="auto",
    out: str | os.PathLike | None = None,
    config: str | None = None,
    split: str | None = None,
    revision: str | None = None,
    image_column: str | None = AUTO,
    label_column: str | None = AUTO,
    limit: int | None = None,
    params: HnswParams = HnswParams(),
    batch_size: int | None = None,
    workers: int | None = None,
    prefetch: int = 2,
    progress: ProgressCallback | None = None,
    show_progress: bool = False,
    checkpoint_seconds: float = 30.0,
    resume: bool = True,
    hamming: CodeKind | str | None = None,
    hamming_bits: int = 0,
    index_root: str | os.PathLike | None = None,
    into: Gallery | None = None,
    store: str | StoreSpec | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    milvus_index: str = "auto",
    target_recall: float | None = DEFAULT_TARGET_RECALL,
) -> Gallery:
    """Embed `dataset` (hub id, saved dataset dir, parquet file, image folder, or 'builtin') into an index.

    model: a spec string for load_embedder, or an Embedder. out: the index directory (default: a cache
    directory keyed by model and dataset under index_root). If `out` holds a build of the same source and
    model, it continues from the next unembedded row (resume=False starts over); a finished build is
    returned as is, and rows the source gained since are added. progress(done, total) is called after
    every batch (the app passes gr.Progress here); show_progress draws a tqdm bar (images/s, ETA).
    into: continue into this already-open index (same model and source) instead of loading `out`, so a
    running app's index gains the new rows while it keeps serving searches.
    store: 'hnsw' (default; $TWINSIGHT_STORE) or 'milvus:URI[#COLLECTION]' (see indexer/index/store.py);
    milvus_index: auto | hnsw | ivf_flat. num_shards/shard_index: embed only rows with row % num_shards ==
    shard_index into the shared Milvus collection; a re-run of a shard deletes its own rows first (no resume).
    target_recall: once an hnswlib index reaches EXACT_SEARCH_BELOW items, and again whenever it has grown by a
    quarter, its search ef is raised until estimated recall@10 reaches this (GalleryIndex.tune_ef; never below
    params.ef); None keeps params.ef as it is.
    The returned index has a `build_report` attribute (BuildReport).
    """
    from ..models import Embedder, load_embedder  # heavy (torch): only when a build runs

    started = time.perf_counter()
    store = parse_store(store) if into is None else None
    shard = _check_shards(num_shards, shard_index, store)
    embedder = model if isinstance(model, Embedder) else load_embedder(model)
    source = open_source(dataset, config, split, revision, image_column, label_column)
    described = source.describe()
    end = len(source) if limit is None else min(int(limit), len(source))
    out = Path(out) if out else into.path if into is not None and into.path else index_dir_for(embedder.name, described, index_root, store)

    if store is not None and store.kind != HNSW:
        index, start, known = open_or_create_milvus(out, embedder, described, params, resume, store, shard, end,
                                                    milvus_index)
    else:
        index, start = _open_or_create(out, embedder, described, params, resume, into)
        known = None
    index.source.update({k: v for k, v in described.items() if k != "next_row"})
    index.source["end"] = end
    index.attach_source(source)  # image(id) of dataset rows reads from the already-open source
    is_folder = source.kind is SourceKind.FOLDER
    if known is None:
        known = {index.get(i).source for i in index.ids} if is_folder else set()  # folders resume by path
    report = BuildReport(out, end, len(index), 0, 0, len(index), 0.0)
    if not _has_work(source, start, end, known):
        changed = bool(hamming and index.hamming is None)
        if changed:
            index.enable_hamming(hamming, hamming_bits)
        if tune_ef_if_due(index, target_recall) or changed:  # an index built before ef tuning is measured once
            index.save(out)
        report.seconds = time.perf_counter() - started
        index.build_report = report
        return index

    bar = _progress_bar(show_progress, end, start)
    records = (r for r in source.records(start, end) if r.source not in known and r.row % num_shards == shard_index)
    shard_kw = {"shard": shard} if store is not None and store.kind != HNSW else {}
    last_save = time.monotonic()
    done = start
    workers = workers or min(4, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="twinsight-decode")
    in_flight: deque[tuple[list[Record], list[Future]]] = deque()  # decoding
    embedding: deque[tuple[list[Record], list[Record], Future | None]] = deque()  # one batch per model stream

    def embed_one():
        """Hand the oldest decoded batch to the model (asynchronously) and count its unreadable images."""
        batch, futures = in_flight.popleft()
        waited = time.perf_counter()
        prepared = [f.result() for f in futures]
        report.decode_wait_seconds += time.perf_counter() - waited
        good = [(r, t) for r, t in zip(batch, prepared) if isinstance(t, torch.Tensor)]
        for message in (t for t in prepared if isinstance(t, str)):
            log.warning("skipping unreadable image: %s", message)
            report.skipped += 1
            if len(report.skipped_examples) < 20:
                report.skipped_examples.append(message)
        vectors = embedder.embed_pixels_async(torch.stack([t for _, t in good])) if good else None
        embedding.append((batch, [r for r, _ in good], vectors))

    def add_one():
        """Add the oldest embedded batch to the index, in source order, and checkpoint when due."""
        nonlocal done, last_save
        batch, good, vectors = embedding.popleft()
        if vectors is not None:
            waited = time.perf_counter()
            result = vectors.result()
            report.model_seconds += time.perf_counter() - waited
            index.add_vectors(result, [r.label for r in good], [r.source for r in good], [r.row for r in good], **shard_kw)
            report.embedded += len(good)
        index.source["next_row"] = batch[-1].row + 1
        bar.update(batch[-1].row + 1 - done)
        done = batch[-1].row + 1
        if progress is not None:
            progress(done, end)
        if time.monotonic() - last_save >= checkpoint_seconds:
            _checkpoint(index, out, report)
            last_save = time.monotonic()

    def finish_one():
        embed_one()
        if len(embedding) > embedder.model_workers:
            add_one()

    try:
        for batch in _batches(records, batch_size or embedder.batch_size):
            in_flight.append((batch, [pool.submit(_prepare, embedder, r) for r in batch]))
            if len(in_flight) > prefetch:
                finish_one()
        while in_flight:
            finish_one()
        while embedding:
            add_one()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # queued decodes are dropped, not finished
        if len(index):
            log.warning("build interrupted at row %s; saving a checkpoint to %s so the next build resumes there",
                        index.source.get("next_row"), out)
            _checkpoint(index, out, report)
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
    if progress is not None and done < end:  # the last new row was not the source's last row
        progress(end, end)
    index.source["next_row"] = end
    if hamming and index.hamming is None:
        index.enable_hamming(hamming, hamming_bits)
    tune_ef_if_due(index, target_recall)
    report.count = len(index)
    report.seconds = time.perf_counter() - started
    index.extra["complete"] = True
    index.extra["last_build"] = _report_dict(report)
    index.save(out)
    index.build_report = report
    return index


def _check_shards(num_shards: int, shard_index: int, store: StoreSpec | None) -> str:
    """The shard tag "I/N" of this worker; sharded builds need a store all workers write to."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise UserInputError(f"--shard-index {shard_index} of --num-shards {num_shards}: need 0 <= index < shards.")
    if num_shards > 1 and (store is None or store.kind == HNSW):
        raise UserInputError("Sharded builds write into one shared collection: add --store milvus:URI "
                         "(the hnswlib store is one local directory).")
    return f"{shard_index}/{num_shards}"


def _has_work(source: GallerySource, start: int, end: int, known: set[str]) -> bool:
    if source.kind is SourceKind.FOLDER or known:  # files may have been added anywhere in the sorted list
        return any(r.source not in known for r in source.records(0, end))
    return start < end


def _open_or_create(out: Path, embedder, described: dict, params: HnswParams, resume: bool,
                    into: Gallery | None) -> tuple[Gallery, int]:
    if into is not None or (resume and (out / META_FILE).is_file()):
        index = into if into is not None else GalleryIndex.load(out, embedder)  # refuses another model or dim
        if into is not None and (into.model != embedder.name or into.dim != embedder.dim):
            raise IndexMismatchError(f"cannot add {embedder.name} (dim {embedder.dim}) embeddings to an index of "
                                     f"{into.model} (dim {into.dim}): use the index's own model.")
        theirs = {key: index.source.get(key) for key in SOURCE_IDENTITY}
        ours = {key: described.get(key) for key in SOURCE_IDENTITY}
        if theirs != ours:
            raise UserInputError(f"{out} holds an index of {theirs}, not of {ours}: choose another --out, "
                             "or pass --no-resume to overwrite it.")
        start = 0 if index.source.get("kind") == SourceKind.FOLDER.value else int(index.source.get("next_row", 0))
        return index, start
    return GalleryIndex(embedder.dim, embedder.name, params, embedder=embedder, source=dict(described), path=out), 0


def tune_ef_if_due(index: Gallery, target_recall: float | None) -> bool:
    """Measure and raise the graph's ef (GalleryIndex.tune_ef) if the index is large enough to be searched through
    the graph and is new or has grown by a quarter since it was last measured; True if it did."""
    last = index.extra.get("ef_tuning") or {}
    if (not target_recall or not index.tunes_ef or len(index) < EXACT_SEARCH_BELOW
            or (last.get("target") == target_recall and len(index) < 1.25 * last.get("count", 0))):
        return False
    tuning = index.tune_ef(target_recall)
    index.extra["ef_tuning"] = asdict(tuning)
    log.info("hnsw ef %d: estimated recall@%d %.3f (target %.2f)", tuning.ef, tuning.k, tuning.recall, target_recall)
    if not tuning.met:
        log.warning("hnsw recall@%d is estimated at %.3f even with ef=%d, short of the target %.2f: rebuild with a "
                    "larger --M or --ef-construction", tuning.k, tuning.recall, tuning.ef, target_recall)
    return True


def _checkpoint(index: Gallery, out: Path, report: BuildReport) -> None:
    """Make the build so far durable. A checkpoint appends what was embedded since the last one to the index's
    journal, and folds it into a full save once it holds a quarter of the index: the full saves of a growing
    build then add up to about five saves of the final index, where a save per checkpoint added up to one per
    checkpoint, each as large as the index so far."""
    index.extra["complete"] = False
    index.extra["last_build"] = _report_dict(report)
    if index.path != out.absolute():
        index.save(out)
    else:
        index.commit(journal_limit=max(JOURNAL_LIMIT, len(index) // 4))


def _report_dict(report: BuildReport) -> dict:
    return {"embedded": report.embedded, "skipped": report.skipped, "resumed_from": report.resumed_from,
            "seconds": round(report.seconds, 3), "model_seconds": round(report.model_seconds, 3),
            "decode_wait_seconds": round(report.decode_wait_seconds, 3), "skipped_examples": report.skipped_examples}


class _NoBar:
    def update(self, n): ...

    def close(self): ...


def _progress_bar(show: bool, total: int, initial: int):
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm  # only for show_progress

    return tqdm(total=total, initial=initial, unit="img", desc="embedding", dynamic_ncols=True)
