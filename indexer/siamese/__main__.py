"""python -m indexer.siamese train|eval ... (see --help)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from .encoder import ARCHITECTURES
from .encoder_train import EncoderConfig
from .losses import LOSSES


STROKES = "strokes"  # --backbone strokes[:ARCH]: train the ink encoder end to end (indexer.siamese.encoder)


def _train(args) -> int:
    backbone = args.backbone or (STROKES if args.mode == "signature" else "effnet-lite0")
    if backbone == STROKES or backbone.startswith(STROKES + ":"):
        return _train_encoder(args, backbone.partition(":")[2] or None)
    from .train import TrainConfig, train

    if args.val_groups:  # heads split identities, not folders; say so rather than ignore the flag
        print("--val-groups is for ink encoders (--backbone strokes); heads hold out --val-fraction of the identities.",
              file=sys.stderr)
        return 2
    args.loss, args.lr, args.backbone = args.loss or "triplet", args.lr or 1e-3, backbone
    args.val_fraction, args.patience = args.val_fraction or 0.2, args.patience or 5

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


def _train_encoder(args, architecture: str | None) -> int:
    from .encoder_train import train_encoder

    defaults = EncoderConfig()
    config = EncoderConfig(
        dataset=args.dataset, out=args.out, architecture=architecture, loss=args.loss or defaults.loss,
        steps=args.steps, ways=args.ways, per_class=args.per_class,
        lr=args.lr or defaults.lr, margin=args.margin, rotations=args.rotations, val_fraction=args.val_fraction or defaults.val_fraction,
        val_groups=tuple(args.val_groups or ()), patience=args.patience or defaults.patience, seed=args.seed,
        threads=args.threads or defaults.threads, progress=not args.quiet,
        data_terms=args.data_terms or "", companion=args.companion,
        command="python -m indexer.siamese " + " ".join(shlex.quote(a) for a in args.argv),
    )
    if args.identity_column or args.image_column:
        print("--backbone strokes trains on image folders (identity = sub-folder).", file=sys.stderr)
        return 2
    result = train_encoder(config)
    card = result.encoder.card
    print(json.dumps({"out": str(result.out), "architecture": card["architecture"]["name"], "threshold": card["threshold"],
                      "metrics": card["metrics"], "seconds_total": card["training"]["seconds_total"],
                      "steps_run": card["training"]["steps_run"], "data": card["data"]}))
    return 0


def _eval(args) -> int:
    from ..models import load_embedder
    from ..verify import Mode, Verifier
    from .evaluate import eval_oneshot, eval_pairs
    from .head import load_head

    from .shipped import default_head

    if args.head == "none":
        head = None
    elif args.head:
        head = load_head(args.head)
    else:
        head = default_head(args.mode)  # signature mode: the shipped signature encoder
    if head is not None and args.mode != head.mode:
        print(f"The head was trained for {head.mode} mode; evaluate it with --mode {head.mode}.", file=sys.stderr)
        return 2
    standalone = getattr(head, "standalone", False)
    backbone = args.backbone or (None if standalone else head.backbone if head else "effnet-lite0")
    embedder = load_embedder(backbone) if backbone else None
    verifier = Verifier(embedder, heads=[head] if head else (), on_multiple_faces=args.on_multiple_faces)
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

    t = commands.add_parser("train", help="train a Siamese encoder (ink) or projection head (photos) on identity-labelled images")
    t.add_argument("--dataset", required=True, help="image folder (identity = sub-folder path), saved dataset, parquet or hub id")
    t.add_argument("--identity-column", help="column naming each image's identity (datasets only)")
    t.add_argument("--image-column", help="image column (datasets only; found automatically)")
    t.add_argument("--loss", choices=LOSSES,
                   help="default: proto for --backbone strokes, triplet for heads (the best in our runs, docs/VERIFICATION.md)")
    t.add_argument("--backbone",
                   help="'strokes' (default in signature mode): train an ink encoder end to end, its architecture picked from "
                        "the data; 'strokes:ARCH' names one (" + ", ".join(ARCHITECTURES) + "). Any model spec "
                        "(default in general mode: effnet-lite0): train a head on that frozen model's features")
    t.add_argument("--mode", choices=["general", "signature"], default="general",
                   help="general (photos, faces: a head on a frozen model) or signature (ink: handwriting, signatures, drawings)")
    t.add_argument("--out", required=True, help="folder for head.safetensors and card.json")
    t.add_argument("--views", type=int, default=3, help="views per image: 1 clean + augmented (default 3)")
    held_out = t.add_mutually_exclusive_group()
    held_out.add_argument("--val-fraction", type=float, help="fraction of identities held out for validation (strokes: "
                          "whole groups, e.g. alphabets or writers; default 0.15 for strokes, 0.2 for heads)")
    held_out.add_argument("--val-groups", nargs="+", metavar="FOLDER", help="ink encoders: validate on these folders' "
                          "identities (alphabets, writers) instead of a drawn --val-fraction")
    t.add_argument("--epochs", type=int, default=40, help="heads only")
    t.add_argument("--patience", type=int, help="validations without gain before stopping (default 6 for strokes, 5 for heads)")
    strokes = t.add_argument_group("ink encoders (--backbone strokes)")
    strokes.add_argument("--steps", type=int, help="training steps (default: the architecture's, e.g. 1800 for conv4-28)")
    strokes.add_argument("--ways", type=int, help="identities per step (default: the architecture's, e.g. 60)")
    strokes.add_argument("--per-class", type=int, help="images per identity per step (default: the architecture's, e.g. 6)")
    strokes.add_argument("--rotations", action=argparse.BooleanOptionalAction, default=None,
                         help="each 90-degree rotation is a class of its own (default: on for square inputs)")
    strokes.add_argument("--companion", help="image model fused with the encoder in signature mode, its thresholds "
                         "calibrated with it (default: the architecture's, effnet-lite0 for signatures); 'none' for none")
    strokes.add_argument("--data-terms", help="the data's source and terms of use, written into the card")
    strokes.add_argument("--threads", type=int, help="torch threads (default 1: robust on a shared machine)")
    t.add_argument("--batch-identities", type=int, default=16)
    t.add_argument("--per-identity", type=int, default=4)
    t.add_argument("--lr", type=float, help="learning rate (default 2e-3 for strokes, 1e-3 for heads)")
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
    e.add_argument("--head", help="head or encoder folder, or hub repo id; 'none' for the plain model "
                   "(default: the shipped signature encoder in signature mode)")
    e.add_argument("--backbone", help="model spec (default: the head's backbone, else effnet-lite0)")
    e.add_argument("--on-multiple-faces", choices=["error", "largest"], default="error",
                   help="face mode: skip images with several faces (error) or compare the largest")
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", help="CSV with image_a, image_b, same_person")
    source.add_argument("--oneshot", help="folder of one-shot runs (run01/training, run01/test, run01/class_labels.txt)")
    e.add_argument("--images", help="folder the pair CSV's file names are relative to")
    e.set_defaults(func=_eval)

    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command, for the trained model's card
    if args.command == "eval" and args.pairs and not args.images:
        parser.error("--pairs needs --images (the folder the CSV's file names are relative to)")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
