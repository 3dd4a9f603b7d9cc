"""Command line: `python -m indexer build ...`, `python -m indexer search ...`, `python -m indexer compare A B`.

Subcommands register through COMMANDS: each entry is a function that adds one subparser and sets
`func` (called with the parsed args, returns the exit code). Add new subcommands by appending to it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

from .hamming import CodeKind
from .index import DEFAULT_TARGET_RECALL, HnswParams, Metric
from .models import CapabilityError
from .sources import AUTO


def add_build(subparsers) -> None:
    p = subparsers.add_parser("build", help="embed a dataset or image folder into an index directory",
                              description="Embed a hub dataset, saved dataset, parquet file, image folder or "
                                          "'builtin' into a persistent hnswlib index. Re-running resumes.")
    p.add_argument("--dataset", required=True, help="hub id, saved dataset dir, .parquet file, image folder, or 'builtin'")
    p.add_argument("--config", help="dataset config (subset)")
    p.add_argument("--split", help="dataset split (default: train, else the first)")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    p.add_argument("--image-column", default=AUTO, help="column with the images (default: the Image feature)")
    p.add_argument("--label-column", default=AUTO, help="column with labels (default: the ClassLabel); 'none' for no labels")
    p.add_argument("--model", default="auto", help="model spec: auto, effnet-lite0, open_clip:ARCH/PRETRAINED, hf:ID")
    p.add_argument("--out", help="index directory (default: a cache dir keyed by model and dataset)")
    p.add_argument("--limit", type=int, help="embed only the first N rows")
    p.add_argument("--batch-size", type=int, help="images per model step (default: the model's)")
    p.add_argument("--workers", type=int, help="decode/preprocess threads (default: min(4, cores))")
    defaults = HnswParams()
    p.add_argument("--M", type=int, default=defaults.M, help=f"hnsw links per node (default {defaults.M})")
    p.add_argument("--ef-construction", type=int, default=defaults.ef_construction,
                   help=f"hnsw build-time candidate list (default {defaults.ef_construction})")
    p.add_argument("--ef", type=int, default=defaults.ef,
                   help=f"hnsw search-time candidate list, at least (default {defaults.ef}; raised to meet --target-recall)")
    p.add_argument("--target-recall", type=float, default=DEFAULT_TARGET_RECALL,
                   help=f"raise ef until the estimated recall@10 reaches this (default {DEFAULT_TARGET_RECALL}; 0 keeps --ef); "
                        "measured at 1,000 items and whenever the index has grown by a quarter")
    p.add_argument("--hamming", choices=[k.value for k in CodeKind], help="also store binary codes for Hamming search")
    p.add_argument("--hamming-bits", type=int, default=0, help="bits per code for --hamming itq (default 128; sign codes have one bit per dimension)")
    p.add_argument("--checkpoint-seconds", type=float, default=30.0, help="save progress this often (default 30)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a partial build")
    p.add_argument("--store", help="where the vectors live: hnsw (default) or milvus:PATH (Milvus Lite) / "
                                   "milvus:http://HOST:19530, optionally #COLLECTION (default: $TWINSIGHT_STORE)")
    p.add_argument("--milvus-index", default="auto", choices=["auto", "hnsw", "ivf_flat"],
                   help="Milvus index type (auto: HNSW up to 2M rows, IVF_FLAT above)")
    p.add_argument("--num-shards", type=int, default=1, help="split the dataset over N workers (needs --store milvus:...)")
    p.add_argument("--shard-index", type=int, default=0, help="this worker's shard: rows with row %% N == I")
    p.set_defaults(func=run_build)


def run_build(args) -> int:
    from .build import build_index

    index = build_index(
        args.dataset, model=args.model, out=args.out, config=args.config, split=args.split, revision=args.revision,
        image_column=args.image_column, label_column=args.label_column, limit=args.limit,
        params=HnswParams(args.M, args.ef_construction, args.ef), batch_size=args.batch_size, workers=args.workers,
        show_progress=True, checkpoint_seconds=args.checkpoint_seconds, resume=not args.no_resume,
        hamming=args.hamming, hamming_bits=args.hamming_bits, store=args.store, num_shards=args.num_shards,
        shard_index=args.shard_index, milvus_index=args.milvus_index, target_recall=args.target_recall or None,
    )
    report = index.build_report
    tuning = index.extra.get("ef_tuning") or {}
    index.close()  # Milvus Lite: release the file for the next process
    print(json.dumps({"index": str(report.out), "count": report.count, "embedded": report.embedded,
                      "skipped": report.skipped, "resumed_from": report.resumed_from,
                      "seconds": round(report.seconds, 2), "model_seconds": round(report.model_seconds, 2),
                      "decode_wait_seconds": round(report.decode_wait_seconds, 2), "images_per_second": round(report.images_per_second, 1),
                      "ef": index.ef if index.tunes_ef else None,  # a Milvus collection's ef is not the graph's
                      "estimated_recall_at_10": round(tuning["recall"], 4) if tuning else None}))
    return 0


def add_search(subparsers) -> None:
    p = subparsers.add_parser("search", help="query an index; prints JSON lines (id, score, label, source)")
    p.add_argument("--index", required=True, help="index directory")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="query image file")
    query.add_argument("--text", help="text query (CLIP models only)")
    query.add_argument("--id", type=int, help="search with the vector of an item of the index")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--label", action="append", help="only items with this label (repeatable)")
    p.add_argument("--metric", choices=[m.value for m in Metric], default=Metric.COSINE.value)
    p.add_argument("--exact", action="store_true", default=None,
                   help="brute force instead of the hnsw graph (the default below 1,000 items)")
    p.add_argument("--ef", type=int, help="override the stored hnsw ef")
    p.set_defaults(func=run_search)


def run_search(args) -> int:
    from .index import open_index

    index = open_index(args.index, ef=args.ef, load_model=args.id is None)
    options = dict(k=args.k, label_filter=args.label, metric=args.metric, exact=args.exact)
    try:
        if args.id is not None:
            hits = index.similar(args.id, **options)
        else:
            hits = index.search(image=args.image, text=args.text, **options)
    finally:
        index.close()
    for hit in hits:
        print(json.dumps({"id": hit.id, "score": round(hit.score, 6), "label": hit.label, "source": hit.source}))
    return 0


def add_compare(subparsers) -> None:
    from .verify import Mode

    p = subparsers.add_parser("compare", help="are two images the same thing, person or writer? prints one JSON object",
                              description="Compare two images; prints {verified, distance, threshold, threshold_source, "
                                          "similarity, model, mode, time}.")
    p.add_argument("image_a")
    p.add_argument("image_b")
    p.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.GENERAL.value,
                   help="general (whole image), face (aligned face, dlib descriptor), signature (cleaned ink)")
    p.add_argument("--model", default="auto", help="embedding model for general and signature modes (default auto)")
    p.add_argument("--threshold", type=float, help="match at or below this distance (default: the mode's calibrated one)")
    p.add_argument("--head", action="append", default=[], help="Siamese head folder or hub repo id (repeatable)")
    p.set_defaults(func=run_compare)


def run_compare(args) -> int:
    from .compare import compare_images

    result = compare_images(args.image_a, args.image_b, args.mode, model=args.model, threshold=args.threshold,
                            heads=args.head)
    print(json.dumps(result.to_dict()))
    return 0


COMMANDS: list[Callable] = [add_build, add_search, add_compare]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m indexer", description="Twinsight gallery indexes.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, CapabilityError, ConnectionError) as exc:  # our errors say what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "build":
            print("interrupted: progress was saved; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
