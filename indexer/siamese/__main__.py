"""python -m indexer.siamese train|eval ... (see --help)."""
from __future__ import annotations

import argparse
import json
import sys

from .losses import LOSSES


def _train(args) -> int:
    from .train import TrainConfig, train

    config = TrainConfig(
        dataset=args.dataset, out=args.out, identity_column=args.identity_column, image_column=args.image_column,
        loss=args.loss, backbone=args.backbone, mode=args.mode, views=args.views, val_fraction=args.val_fraction,
        epochs=args.epochs, patience=args.patience, batch_identities=args.batch_identities,
        per_identity=args.per_identity, lr=args.lr, margin=args.margin, max_per_identity=args.max_per_identity,
        seed=args.seed, feature_cache=args.feature_cache, progress=not args.quiet,
        fine_tune_blocks=args.fine_tune_blocks, top_lr_factor=args.top_lr_factor,
    )
    result = train(config)
    card = result.head.card
    print(json.dumps({"out": str(result.out), "threshold": card["threshold"], "metrics": card["metrics"],
                      "training": {k: v for k, v in card["training"].items() if k != "config"}, "data": card["data"]}))
    return 0


def _eval(args) -> int:
    from ..models import load_embedder
    from ..verify import Mode, Verifier
    from .evaluate import eval_oneshot, eval_pairs
    from .head import load_head

    head = load_head(args.head) if args.head else None
    if head is not None and args.mode != head.mode:
        print(f"The head was trained for {head.mode} mode; evaluate it with --mode {head.mode}.", file=sys.stderr)
        return 2
    backbone = args.backbone or (head.backbone if head else "effnet-lite0")
    verifier = Verifier(load_embedder(backbone), heads=[head] if head else (), on_multiple_faces=args.on_multiple_faces)
    mode = Mode(args.mode)
    if args.oneshot:
        result = eval_oneshot(verifier, mode, args.oneshot)
    else:
        result = eval_pairs(verifier, mode, args.pairs, args.images)
    if head is not None:
        result["head"] = head.source
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexer.siamese", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    t = commands.add_parser("train", help="train a Siamese projection head on identity-labelled images")
    t.add_argument("--dataset", required=True, help="image folder (identity = sub-folder path), saved dataset, parquet or hub id")
    t.add_argument("--identity-column", help="column naming each image's identity (datasets only)")
    t.add_argument("--image-column", help="image column (datasets only; found automatically)")
    t.add_argument("--loss", choices=LOSSES, default="triplet", help="default triplet (best one-shot accuracy in our runs)")
    t.add_argument("--backbone", default="effnet-lite0", help="model spec of the frozen backbone (default effnet-lite0)")
    t.add_argument("--mode", choices=["general", "signature"], default="general",
                   help="preprocessing and augmentation: general (photos, faces) or signature (ink strokes)")
    t.add_argument("--out", required=True, help="folder for head.safetensors and card.json")
    t.add_argument("--views", type=int, default=3, help="views per image: 1 clean + augmented (default 3)")
    t.add_argument("--val-fraction", type=float, default=0.2, help="fraction of identities held out for validation")
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--patience", type=int, default=5, help="epochs without validation AUC gain before stopping")
    t.add_argument("--batch-identities", type=int, default=16)
    t.add_argument("--per-identity", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--margin", type=float, help="contrastive (default 1.0) or triplet (default 0.2) margin")
    t.add_argument("--max-per-identity", type=int, help="use at most this many images of each identity")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--feature-cache", help="folder to keep backbone features in; later runs on the same data reuse them")
    t.add_argument("--fine-tune-blocks", type=int, default=0, metavar="N",
                   help="also fine-tune the backbone's last N blocks (a copy kept in the head; effnet-lite0 or open_clip ViTs; default 0)")
    t.add_argument("--top-lr-factor", type=float, default=0.1,
                   help="learning rate of the fine-tuned blocks = --lr x this (default 0.1)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_train)

    e = commands.add_parser("eval", help="evaluate a mode (and head) on labelled pairs or one-shot runs; prints one JSON line")
    e.add_argument("--mode", choices=["general", "face", "signature"], required=True)
    e.add_argument("--head", help="head folder or hub repo id")
    e.add_argument("--backbone", help="model spec (default: the head's backbone, else effnet-lite0)")
    e.add_argument("--on-multiple-faces", choices=["error", "largest"], default="error",
                   help="face mode: skip images with several faces (error) or compare the largest")
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", help="CSV with image_a, image_b, same_person")
    source.add_argument("--oneshot", help="folder of one-shot runs (run01/training, run01/test, run01/class_labels.txt)")
    e.add_argument("--images", help="folder the pair CSV's file names are relative to")
    e.set_defaults(func=_eval)

    args = parser.parse_args(argv)
    if args.command == "eval" and args.pairs and not args.images:
        parser.error("--pairs needs --images (the folder the CSV's file names are relative to)")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
