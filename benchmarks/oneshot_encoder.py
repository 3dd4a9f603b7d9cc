"""Omniglot 20-way within-alphabet one-shot accuracy of the stroke encoder on alphabets never seen in training.

    python benchmarks/oneshot_encoder.py --omniglot ../shared/data/omniglot \
        --holdout "Japanese_(katakana)" Sanskrit --seeds 0 1 2 --out /tmp/oneshot-bench

For each fold (a set of held-out alphabets) it builds the 20 runs the way Lake et al. do
(benchmarks/make_oneshot_runs.py: 20 characters of one alphabet, one drawer's image to learn from and
another's to test), trains one encoder per seed on every other alphabet (a folder of symlinks; Greek and
Latin, in both background sets, once), with `python -m indexer.siamese train`'s defaults unless told
otherwise, and scores the runs through the app's own Verifier (signature mode). Prints a table of mean
accuracy +- standard error over the runs, per seed and over seeds, and the training time; writes
OUT/results.json. Slow (minutes per seed): not part of the test suite.

How accuracy grows with the data: `--val-alphabets Tagalog` fixes the validation alphabet, and
`--train-alphabets K` learns from K of the remaining alphabets (the same draw for every seed), e.g.

    python benchmarks/oneshot_encoder.py --omniglot ../shared/data/omniglot --holdout "Japanese_(katakana)" \
        --holdout Sanskrit --seeds 0 --val-alphabets Tagalog --train-alphabets 2 --out /tmp/oneshot-growth
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_oneshot_runs import make_runs  # noqa: E402

from indexer.siamese.encoder_train import EncoderConfig, train_encoder  # noqa: E402
from indexer.siamese.evaluate import eval_oneshot  # noqa: E402
from indexer.verify import Mode, Verifier  # noqa: E402


def alphabets(omniglot: Path) -> dict[str, Path]:
    """Alphabet name -> folder, first background set first (an alphabet in both is taken once)."""
    found: dict[str, Path] = {}
    for part in sorted(p for p in omniglot.iterdir() if p.is_dir()):
        for alphabet in sorted(p for p in part.iterdir() if p.is_dir()):
            found.setdefault(alphabet.name, alphabet)
    return found


def link_folder(folder: Path, members: dict[str, Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in members.items():
        link = folder / name
        if not link.exists():
            os.symlink(target.resolve(), link, target_is_directory=True)
    return folder


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--omniglot", type=Path, required=True, help="folder of Omniglot background sets")
    parser.add_argument("--holdout", nargs="+", action="append", required=True,
                        help="alphabets of one fold (repeat --holdout for more folds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, help="training steps (default: the trainer's)")
    parser.add_argument("--architecture", help="encoder architecture (default: picked from the data)")
    parser.add_argument("--loss", help="loss (default: the trainer's)")
    parser.add_argument("--val-alphabets", nargs="+", default=[],
                        help="validate on these alphabets (default: the trainer's draw of 15%% of the characters)")
    parser.add_argument("--train-alphabets", type=int, metavar="K",
                        help="learn from K of the other alphabets (a fixed draw), to see how accuracy grows with data")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the trainer: two OpenMP threads crawl on a shared 2-core machine

    every = alphabets(args.omniglot)
    rows = []
    for fold in args.holdout:
        missing = [name for name in [*fold, *args.val_alphabets] if name not in every]
        if missing:
            raise SystemExit(f"No alphabet {missing} under {args.omniglot}; alphabets: {', '.join(every)}")
        name = "+".join(fold)
        tag = "".join(c if c.isalnum() else "_" for c in name)
        runs = args.out / f"runs-{tag}"
        make_runs(link_folder(args.out / f"heldout-{tag}", {a: every[a] for a in fold}), runs)
        learn = [a for a in every if a not in fold and a not in args.val_alphabets]
        if args.train_alphabets:
            random.Random(0).shuffle(learn)  # the same draw for every seed: seeds vary the training only
            learn, tag = sorted(learn[:args.train_alphabets]), f"{tag}-k{args.train_alphabets}"
        members = learn + [a for a in args.val_alphabets if a not in fold]
        train_dir = link_folder(args.out / f"train-{tag}", {a: every[a] for a in members})
        for seed in args.seeds:
            config = EncoderConfig(dataset=str(train_dir), out=str(args.out / f"model-{tag}-seed{seed}"), seed=seed,
                                   progress=sys.stderr.isatty(), val_groups=tuple(args.val_alphabets))
            for key in ("steps", "architecture", "loss"):
                if getattr(args, key):
                    setattr(config, key, getattr(args, key))
            load = os.getloadavg()[0]
            started = time.perf_counter()
            result = train_encoder(config)
            seconds = time.perf_counter() - started
            scores = eval_oneshot(Verifier(None, heads=[result.encoder]), Mode.SIGNATURE, runs)
            mean, se = mean_se(scores["per_run_accuracy"])
            rows.append({"fold": name, "seed": seed, "mean": mean, "se": se, "per_run": scores["per_run_accuracy"],
                         "train_seconds": round(seconds, 1), "load_before": round(load, 2),
                         "architecture": result.encoder.card["architecture"]["name"], "loss": result.encoder.card["loss"],
                         "steps_run": result.encoder.card["training"]["steps_run"], "alphabets": members,
                         "train_identities": result.encoder.card["data"]["train_identities"]})
            print(f"{name:30s} seed {seed}: {mean:.1%} +- {se:.1%} over {len(scores['per_run_accuracy'])} runs, "
                  f"trained in {seconds / 60:.1f} min (load {load:.1f})", flush=True)
            (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\nCPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| held-out alphabets | training characters | seeds | mean over seeds +- SE | per seed (mean +- SE over 20 runs) "
          "| training min |")
    print("|---|---|---|---|---|---|")
    for fold in dict.fromkeys(row["fold"] for row in rows):
        mine = [row for row in rows if row["fold"] == fold]
        mean, se = mean_se([row["mean"] for row in mine])
        seeds = ", ".join(f"{row['mean']:.1%} +- {row['se']:.1%}" for row in mine)
        minutes = ", ".join(f"{row['train_seconds'] / 60:.1f}" for row in mine)
        print(f"| {fold} | {mine[0]['train_identities']} | {len(mine)} | {mean:.1%} +- {se:.1%} | {seeds} | {minutes} |")


if __name__ == "__main__":
    main()
