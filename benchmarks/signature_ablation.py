"""What each part of signature mode's fused score adds, on writers never seen in training (docs/VERIFICATION.md).

    python benchmarks/signature_ablation.py --signatures ../shared/data/signatures-dev --models /tmp/signature-bench4

Takes the fold encoders `benchmarks/signature_encoder.py` trained (MODELS/model-foldK) and scores the same trials
(5 references, relative to their spread) with a growing set of blocks, fused as siamese.fused does: the encoder
alone; plus effnet-lite0's vector of the 224x224 ink (the previous companion); the ink at 224x512 instead; plus the
stage-5 texture block. "centred": each block minus its mean over the fold's training writers' images. Prints
mean +- standard error over folds of the equal error rates for skilled and random forgeries.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from signature_encoder import REFERENCES, against, mean_se, trials, writer_folds  # noqa: E402

from indexer.calibration import equal_error_rate, relative_distance  # noqa: E402
from indexer.models import load_embedder  # noqa: E402
from indexer.signature import preprocess_signature  # noqa: E402
from indexer.siamese import load_head  # noqa: E402
from indexer.siamese.fused import companion_parts, fuse  # noqa: E402

VARIANTS = {  # name: (blocks, centred)
    "stroke encoder alone": (["encoder"], False),
    "+ effnet-lite0 of the 224x224 ink (the previous companion)": (["encoder", "square"], False),
    "+ the ink at 224x512 instead, centred": (["encoder", "wide"], True),
    "+ stage-5 texture, not centred": (["encoder", "wide", "stage5"], False),
    "+ stage-5 texture, centred (shipped)": (["encoder", "wide", "stage5"], True),
}


def effnet_blocks(images: list[Path], effnet) -> dict[str, np.ndarray]:
    """effnet-lite0's blocks of every image: the same in every fold (its weights are not trained), so computed once."""
    out: dict[str, list] = {"square": [], "wide": [], "stage5": []}
    for start in range(0, len(images), 16):
        chunk = [str(p) for p in images[start : start + 16]]
        out["square"].append(effnet.encode_images([preprocess_signature(p) for p in chunk]))
        wide, stage5 = companion_parts(effnet, chunk)
        out["wide"].append(wide)
        out["stage5"].append(stage5)
    return {k: np.concatenate(v) for k, v in out.items()}


def fold_eers(root: Path, test: list[str], vectors: np.ndarray, row: dict[str, int]) -> dict[str, float]:
    distances, kinds = [], []
    for trial in trials(root, test):
        refs = [row[str(p)] for p in sorted((root / trial["claimed"] / "genuine").glob("*.png"))[:REFERENCES]]
        among = (1 - vectors[refs] @ vectors[refs].T)[np.triu_indices(len(refs), k=1)]
        distances.append(relative_distance(1 - vectors[refs] @ vectors[row[str(trial["questioned"])]], among))
        kinds.append(trial["kind"])
    distances, kinds = np.asarray(distances), np.asarray(kinds)
    eers = {}
    for forgery in ("skilled", "random"):
        eers[forgery] = equal_error_rate(*against(distances, kinds, forgery))[0]
    return eers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signatures", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True, help="signature_encoder.py's --out (model-foldK)")
    parser.add_argument("--folds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    effnet = load_embedder("effnet-lite0")
    images = sorted(args.signatures.glob("*/*/*.png"))
    row = {str(p): k for k, p in enumerate(images)}
    results: dict[str, list] = {name: [] for name in VARIANTS}
    shared = effnet_blocks(images, effnet)
    for k, test in enumerate(writer_folds(args.signatures, args.folds)):
        encoder = load_head(args.models / f"model-fold{k}")
        blocks = {**shared, "encoder": np.concatenate([encoder.encode([str(p) for p in images[i : i + 16]])
                                                       for i in range(0, len(images), 16)])}
        train_rows = [row[str(p)] for p in images if p.parts[-3] not in test]
        for name, (keys, centred) in VARIANTS.items():
            parts = [blocks[key] for key in keys]
            centres = [part[train_rows].mean(0) for part in parts] if centred else None
            results[name].append(fold_eers(args.signatures, test, fuse(parts, centres), row))
            print(f"fold {k} {name}: " + ", ".join(f"{f} {v:.1%}" for f, v in results[name][-1].items()), flush=True)
    print("\n| blocks (5 references, relative) | skilled EER | random EER | per fold, skilled |\n| --- | ---: | ---: | --- |")
    for name, folds in results.items():
        skilled, random_ = [f["skilled"] for f in folds], [f["random"] for f in folds]
        print(f"| {name} | {mean_se(skilled)} | {mean_se(random_)} | {', '.join(f'{x:.1%}' for x in skilled)} |")


if __name__ == "__main__":
    main()
