"""The plain recipe, outside the trainer: a check of what the one-shot table can reach with the data at hand.

    python benchmarks/oneshot_plain.py --runs /tmp/oneshot20 --minutes 8 --seed 0 [--prep page|crop]
        [--distance euclid|cosine] [--loss proto|classify] [--size 28] [--rotations 4|8] [--thickness]
        [--holdout "Japanese_(katakana)" Sanskrit] [--save NET.pt]
    python benchmarks/oneshot_plain.py --runs /tmp/oneshot20 --ensemble A.pt B.pt [--views 6]

Conv-4 (4 x [3x3 conv 64, BN, ReLU, 2x2 max-pool], 64-d) on 28x28 greyscale with ink as 1, trained for a fixed
wall time on one thread with an episodic prototypical loss (60 classes x [1 support + 5 queries], squared
Euclidean distance, Snell et al. 2017), random affine distortions (Koch et al.'s ranges) and the four 90-degree
rotations of each character as classes of their own; Adam, cosine learning rate. Training data: every Omniglot
alphabet under --omniglot except the held-out ones (Greek and Latin, in both background sets, once). Scores
the runs of benchmarks/make_oneshot_runs.py by nearest neighbour (1 view, and the mean over --views fixed
distortions), by Euclidean and cosine distance; mean +- standard error over the runs. --ensemble scores saved
nets together (sum of their distances, each over its median). Independent of indexer.siamese's trainer on
purpose (it only borrows the ink crop and the distortions), so the two can be compared. Slow: not in CI.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.siamese.distort import random_affine, random_thickness, rotate_quarters  # noqa: E402
from indexer.siamese.encoder import ink_pixels  # noqa: E402
from indexer.siamese.evaluate import read_oneshot_run  # noqa: E402


def conv4() -> nn.Sequential:
    layers: list[nn.Module] = []
    for channels in (1, 64, 64, 64):
        layers += [nn.Conv2d(channels, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten())


def pixels(path: Path, prep: str, size: int) -> np.ndarray:
    if prep == "page":  # the whole 105x105 drawing, box-filtered down
        image = Image.open(path).convert("L").resize((size, size), Image.Resampling.BOX)
        return 1.0 - np.asarray(image, np.float32) / 255.0
    return ink_pixels(str(path), (size // 2, size // 2))  # cropped to the ink, at `size` (twice the argument)


def training_set(omniglot: Path, holdout: list[str], prep: str, size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    alphabets: dict[str, Path] = {}
    for part in sorted(p for p in omniglot.iterdir() if p.is_dir()):
        for alphabet in sorted(p for p in part.iterdir() if p.is_dir() and p.name not in holdout):
            alphabets.setdefault(alphabet.name, alphabet)
    images, members = [], []
    for alphabet in alphabets.values():
        for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
            files = sorted(character.glob("*.png"))
            members.append(torch.arange(len(images), len(images) + len(files)))
            images += [pixels(f, prep, size) for f in files]
    print(f"training on {len(alphabets)} alphabets, {len(members)} characters, {len(images)} images", flush=True)
    return torch.from_numpy(np.stack(images))[:, None], members


def transform(x: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """kind % 4 quarter turns, mirrored when kind >= 4."""
    x = rotate_quarters(x, kind % 4)
    mirrored = kind >= 4
    x[mirrored] = torch.flip(x[mirrored], dims=(3,))
    return x


def train(args, x: torch.Tensor, members: list[torch.Tensor]) -> tuple[nn.Module, dict]:
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    net = conv4().to(memory_format=torch.channels_last)
    classes = len(members) * args.rotations
    weights = nn.Parameter(torch.randn(classes, 64) * 0.01)  # the classifier of --loss classify
    scale = nn.Parameter(torch.tensor(10.0))
    optimizer = torch.optim.Adam([*net.parameters(), weights, scale], lr=args.lr)
    started, steps, losses = time.time(), 0, []
    budget = args.minutes * 60
    while time.time() - started < budget:
        for group in optimizer.param_groups:
            group["lr"] = args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, (time.time() - started) / budget))))
        if args.loss == "proto":
            chosen = torch.randperm(classes, generator=generator)[: args.ways]
            picks = [members[c // args.rotations][torch.randperm(len(members[c // args.rotations]), generator=generator)[: 1 + args.queries]]
                     for c in chosen.tolist()]
            labels = chosen.repeat_interleave(1 + args.queries)
            index = torch.cat(picks)
        else:
            labels = torch.randint(classes, (args.ways * (1 + args.queries),), generator=generator)
            index = torch.stack([members[c // args.rotations][torch.randint(len(members[c // args.rotations]), (1,), generator=generator)][0]
                                 for c in labels.tolist()])
        batch = random_affine(transform(x[index], labels % args.rotations), generator)
        if args.thickness:
            batch = random_thickness(batch, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = net(batch.contiguous(memory_format=torch.channels_last)).float()
        if args.loss == "proto":
            z = z.view(len(chosen), 1 + args.queries, -1)
            support, queries = z[:, 0], z[:, 1:].reshape(-1, z.shape[-1])
            logits = (-torch.cdist(queries, support).pow(2) if args.distance == "euclid"
                      else scale * F.normalize(queries, dim=-1) @ F.normalize(support, dim=-1).T)
            loss = F.cross_entropy(logits, torch.arange(len(chosen)).repeat_interleave(args.queries))
        else:
            loss = F.cross_entropy(scale * F.normalize(z, dim=-1) @ F.normalize(weights, dim=-1).T, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        losses.append(loss.item())
        if steps % 200 == 0:
            print(f"step {steps} {time.time() - started:.0f}s loss {np.mean(losses[-200:]):.3f}", flush=True)
    return net.eval(), {"steps": steps, "train_seconds": round(time.time() - started, 1)}


def oneshot_runs(runs: Path):
    """Per run: (test images, training images, index of each test image's true training image)."""
    for run in sorted(runs.glob("run*")):
        training, tests, truth = read_oneshot_run(run)
        yield tests, training, np.array([training.index(truth[test]) for test in tests])


def view_stack(net: nn.Module, files: list[Path], prep: str, size: int, views: int) -> torch.Tensor:
    """(views, n, 64): each image's vector, then those of `views` - 1 fixed distortions of it."""
    x = torch.from_numpy(np.stack([pixels(f, prep, size) for f in files]))[:, None]
    with torch.inference_mode():
        return torch.stack([net(x if v == 0 else random_affine(x, torch.Generator().manual_seed(v), same_for_all=True))
                            for v in range(views)])


def run_distances(nets: list[nn.Module], runs: Path, prep: str, size: int, views: int) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Per run: (true class of each test item, per net the squared Euclidean and cosine distance matrices of the
    mean vectors over the views)."""
    out = []
    for tests, training, truth in oneshot_runs(runs):
        matrices = []
        for net in nets:
            q, t = view_stack(net, tests, prep, size, views).mean(0), view_stack(net, training, prep, size, views).mean(0)
            matrices.append((torch.cdist(q, t).pow(2).numpy(), 1 - (F.normalize(q, dim=-1) @ F.normalize(t, dim=-1).T).numpy()))
        out.append((truth, matrices))
    return out


def aligned(net: nn.Module, args) -> list[float]:
    """Per-run accuracy with the distance of two images as the smallest over every pair of their distorted views."""
    per_run = []
    for tests, training, truth in oneshot_runs(args.runs):
        q = view_stack(net, tests, args.prep, args.size, args.align)
        t = view_stack(net, training, args.prep, args.size, args.align)
        d = torch.cdist(q.flatten(0, 1), t.flatten(0, 1)).view(args.align, len(tests), args.align, len(training))
        per_run.append(float(np.mean(d.amin(dim=(0, 2)).argmin(1).numpy() == truth)))
    return per_run


def accuracy(per_run: list[float]) -> str:
    values = np.asarray(per_run)
    return f"{values.mean():.1%} +- {values.std(ddof=1) / np.sqrt(len(values)):.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--omniglot", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/omniglot")
    parser.add_argument("--runs", type=Path, required=True, help="runs of benchmarks/make_oneshot_runs.py")
    parser.add_argument("--holdout", nargs="+", default=["Japanese_(katakana)", "Sanskrit"])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prep", choices=("page", "crop"), default="page")
    parser.add_argument("--distance", choices=("euclid", "cosine"), default="euclid")
    parser.add_argument("--loss", choices=("proto", "classify"), default="proto")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--rotations", type=int, choices=(4, 8), default=4, help="8: mirror images are classes too")
    parser.add_argument("--thickness", action="store_true")
    parser.add_argument("--ways", type=int, default=60)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--save", type=Path)
    parser.add_argument("--ensemble", type=Path, nargs="+", help="score these saved nets together instead of training")
    parser.add_argument("--align", type=int, metavar="VIEWS",
                        help="also score each saved net by the smallest distance over VIEWS x VIEWS distorted views")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.ensemble:
        nets = []
        for path in args.ensemble:
            net = conv4()
            net.load_state_dict(torch.load(path, weights_only=True))
            nets.append(net.eval())
        info = {"ensemble": [str(p) for p in args.ensemble]}
    else:
        net, info = train(args, *training_set(args.omniglot, args.holdout, args.prep, args.size))
        nets = [net]
        if args.save:
            torch.save(net.state_dict(), args.save)
    results = {}
    for views in sorted({1, args.views}):
        runs = run_distances(nets, args.runs, args.prep, args.size, views)
        for k, distance in enumerate(("euclid", "cosine")):
            per_run = [float(np.mean(sum(m[k] / np.median(m[k]) for m in matrices).argmin(1) == truth)) for truth, matrices in runs]
            results[f"{distance}, {views} view{'s' if views > 1 else ''}"] = accuracy(per_run)
    for net, path in zip(nets, args.ensemble or []) if args.align else ():
        results[f"{path}: smallest over {args.align} x {args.align} views"] = accuracy(aligned(net, args))
    print(json.dumps({**info, "args": {k: str(v) for k, v in vars(args).items()}, "accuracy": results}, indent=1))


if __name__ == "__main__":
    main()
