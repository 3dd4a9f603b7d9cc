"""Peak memory of many users decoding huge images at once, with and without the decode budget.

    TWINSIGHT_DECODE_BUDGET_MB=1024 /usr/bin/time -v .venv/bin/python benchmarks/decode_memory.py     # the default
    TWINSIGHT_DECODE_BUDGET_MB=100000 /usr/bin/time -v .venv/bin/python benchmarks/decode_memory.py   # no real bound

`--users` threads each decode the same 8000x8000 PNG (~200 KB on disk, 256 MB decoded) and hold it for a second,
as requests do while they work; compare "Maximum resident set size" between the two runs.
"""
from __future__ import annotations

import argparse
import io
import sys
import threading
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer import load_image  # noqa: E402
from indexer.images import DECODE_BUDGET  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--side", type=int, default=8000)
    args = parser.parse_args()
    buffer = io.BytesIO()
    Image.new("RGB", (args.side, args.side), "white").save(buffer, format="PNG")
    data = buffer.getvalue()

    def user() -> None:
        image = load_image(data)
        time.sleep(1.0)
        del image

    threads = [threading.Thread(target=user) for _ in range(args.users)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"{args.users} users decoded a {args.side}x{args.side} PNG ({len(data) // 1024} KB) in "
          f"{time.perf_counter() - start:.1f} s with a decode budget of {DECODE_BUDGET.limit_bytes / 2**20:,.0f} MB")


if __name__ == "__main__":
    main()
