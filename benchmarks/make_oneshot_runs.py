"""Build N-way one-shot runs in the layout of the standard Omniglot 20-way runs.

    python benchmarks/make_oneshot_runs.py --root ../shared/data/omniglot/images_background_small2 \
        --exclude Greek Latin --out /tmp/oneshot20

Each run uses one alphabet: `ways` characters, one drawer's drawing as the single training example of
each (training/classNN.png) and another drawer's drawing as the test item (test/itemNN.png);
class_labels.txt lines read `runNN/test/itemNN.png runNN/training/classMM.png`. It also writes
OUT/pairs.csv (image_a, image_b, same_person: each test item with its class and with one other class)
for `python -m indexer.siamese eval --pairs OUT/pairs.csv --images OUT`.
"""
from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path


def drawer(path: Path) -> str:
    return path.stem.rsplit("_", 1)[-1]  # Omniglot names drawings CHARID_DRAWER.png


def make_runs(root: Path, out: Path, runs: int = 20, ways: int = 20, exclude: tuple[str, ...] = (), seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabets = sorted(
        a for a in root.iterdir() if a.is_dir() and a.name not in exclude and sum(1 for c in a.iterdir() if c.is_dir()) >= ways
    )
    if not alphabets:
        raise SystemExit(f"No alphabet in {root} has {ways}+ characters (after excluding {list(exclude)}).")
    out.mkdir(parents=True, exist_ok=True)
    pairs: list[str] = []
    pair_rng = random.Random(seed + 1)  # separate, so the runs do not depend on the pairs
    for number in range(1, runs + 1):
        alphabet = alphabets[(number - 1) % len(alphabets)]
        characters = rng.sample(sorted(c for c in alphabet.iterdir() if c.is_dir()), ways)
        drawers = sorted({drawer(p) for p in characters[0].glob("*.png")})
        first, second = rng.sample(drawers, 2)
        run = f"run{number:02d}"
        for sub in ("training", "test"):
            (out / run / sub).mkdir(parents=True, exist_ok=True)
        order = list(range(ways))
        rng.shuffle(order)
        lines = []
        for k, character in enumerate(characters):
            by_drawer = {drawer(p): p for p in character.glob("*.png")}
            shutil.copyfile(by_drawer[first], out / run / "training" / f"class{k + 1:02d}.png")
            item = order[k] + 1
            shutil.copyfile(by_drawer[second], out / run / "test" / f"item{item:02d}.png")
            lines.append((item, f"{run}/test/item{item:02d}.png {run}/training/class{k + 1:02d}.png"))
        (out / run / "class_labels.txt").write_text("\n".join(line for _, line in sorted(lines)) + "\n", encoding="utf-8")
        for item, line in sorted(lines):
            test, train = line.split()
            other = pair_rng.choice([f"{run}/training/class{k:02d}.png" for k in range(1, ways + 1) if not train.endswith(f"class{k:02d}.png")])
            pairs += [f"{test},{train},1", f"{test},{other},0"]
    # The same data as verification pairs: each test item with its own class and with one other class.
    (out / "pairs.csv").write_text("image_a,image_b,same_person\n" + "\n".join(pairs) + "\n", encoding="utf-8")
    return [a.name for a in alphabets]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="folder of alphabets (ALPHABET/characterNN/*.png)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--exclude", nargs="*", default=[], help="alphabets to leave out (e.g. those seen in training)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    used = make_runs(args.root, args.out, args.runs, args.ways, tuple(args.exclude), args.seed)
    print(f"{args.runs} {args.ways}-way runs in {args.out} from alphabets: {', '.join(used)}")


if __name__ == "__main__":
    main()
