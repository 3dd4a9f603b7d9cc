"""Twinsight: classification, pairwise similarity and gallery search sharing one embedding model."""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys

import gradio as gr

from demo import classification, gallery, pairwise, runtime
from indexer.config import settings

# Concurrent events per function. The model's coalescer can only batch requests that are inside their callbacks
# at once, so this caps its batch: 16 gave ViT-B-32 ~1.2x the throughput of 8 at 16 clients
# (docs/dev/MEASUREMENT-NOTES.md).
CONCURRENCY = settings().concurrency
# Requests waiting beyond this get Gradio's "queue is full" answer instead of piling up in memory.
QUEUE_SIZE = settings().queue_size
MAX_UPLOAD = settings().max_upload
# After every event Gradio rebuilds a pandas summary of up to 10,000 past events for its monitoring page: 3-9 ms of
# CPU per request, growing with the events served (docs/dev/MEASUREMENT-NOTES.md). Every 100th event is enough.
ANALYTICS_EVERY = os.environ.get("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")


# Gradio's temporary files (uploads, files it copies to serve): every 30 minutes, delete those over an hour old,
# so a long-running public Space does not fill its disk.
DELETE_CACHE = (1800, 3600)


def build_app() -> gr.Blocks:
    runtime.use_examples_cache()
    with gr.Blocks(title="Twinsight", delete_cache=DELETE_CACHE) as app:
        gr.Markdown("# Twinsight\nVisual similarity: classify an image, compare two, search a gallery.")
        gr.Markdown(runtime.status_markdown())
        with gr.Tabs():
            with gr.Tab("Classification"):
                classification.build()
            with gr.Tab("Pairwise similarity"):
                pairwise.build()
            with gr.Tab("Gallery search"):
                gallery.build()
    return app


def queued(app: gr.Blocks) -> gr.Blocks:
    """The app behind its request queue: at most QUEUE_SIZE waiting, CONCURRENCY events per function at once."""
    os.environ["GRADIO_ANALYTICS_CACHE_FREQUENCY"] = ANALYTICS_EVERY  # Gradio reads it when it makes the queue
    return app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="model spec: auto (default), effnet-lite0, open_clip:ARCH/PRETRAINED, hf:ID_OR_PATH")
    parser.add_argument("--gallery", help="hub dataset id, saved dataset, parquet file or image folder to search")
    parser.add_argument("--store", help="where the gallery vectors live: hnsw (default) or milvus:PATH / milvus:http://HOST:19530")
    parser.add_argument("--ef", type=int, help="hnsw search candidate list: higher = better recall, slower (default: the index's, "
                        "tuned by its build to recall@10 0.98, at least 96)")
    parser.add_argument("--head", action="append", help="Siamese head for the pairwise tab: folder or hub repo id (repeatable)")
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; 0.0.0.0 on Spaces)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--mcp", action="store_true", default=settings().mcp,
                        help="also serve the public endpoints as an MCP server for agents (needs: pip install 'gradio[mcp]')")
    args = parser.parse_args(argv)
    if args.mcp and not mcp_available():
        parser.error("--mcp needs the MCP extra: pip install 'gradio[mcp]' (or leave out --mcp).")
    return args


def create_demo(args: argparse.Namespace) -> gr.Blocks:
    """The configured, warmed-up app behind its queue."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtime.configure(model=args.model, gallery=args.gallery, heads=args.head, store=args.store, ef=args.ef)
    runtime.warm_up()
    return queued(build_app())


def mcp_available() -> bool:
    return importlib.util.find_spec("mcp") is not None


def launch(app: gr.Blocks, args: argparse.Namespace) -> None:
    app.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD, show_error=False,
               mcp_server=bool(args.mcp), css=pairwise.CSS)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    launch(create_demo(args), args)


# `twinsight COMMAND`: the app, or one of the library's commands (the console entry point of pyproject.toml).
LIBRARY_COMMANDS = {
    "build": ("indexer.__main__", "embed a dataset or image folder into an index"),
    "search": ("indexer.__main__", "search an index by image or text"),
    "compare": ("indexer.__main__", "are two images the same person, writer or thing? (one JSON object)"),
    "train": ("indexer.siamese.__main__", "train a Siamese encoder or head"),
    "eval": ("indexer.siamese.__main__", "evaluate a mode on labelled pairs or one-shot runs"),
}


def cli(argv: list[str] | None = None) -> int:
    """The `twinsight` console command: `twinsight app [--model ...]`, or `twinsight build|search|train|eval ...`,
    the same as `python app.py ...`, `python -m indexer ...` and `python -m indexer.siamese ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"app": "run the Gradio app (python app.py)", **{k: v[1] for k, v in LIBRARY_COMMANDS.items()}}
    if not argv or argv[0] not in commands:
        usage = "\n".join(f"  {name:<8} {text}" for name, text in commands.items())
        stream = sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr
        print(f"usage: twinsight COMMAND [ARGS]  (twinsight COMMAND --help for its options)\n\ncommands:\n{usage}", file=stream)
        return 0 if stream is sys.stdout else 2
    command, rest = argv[0], argv[1:]
    if command == "app":
        main(rest)
        return 0
    module = importlib.import_module(LIBRARY_COMMANDS[command][0])
    return int(module.main([command, *rest]) or 0)


# A module-level `demo` for `gradio app.py` (hot reload): it re-runs this file under the module's own name and
# takes `demo` from it. Built only when run (as a script or by Gradio's reloader), so `import app` stays light.
demo = create_demo(parse_args()) if __name__ == "__main__" or os.environ.get("GRADIO_WATCH_DIRS") else None

if __name__ == "__main__":
    launch(demo, parse_args())
