"""Writer-independent signature verification on held-out writers, cross-validated over writer folds.

    python benchmarks/signature_encoder.py --signatures ../shared/data/signatures-dev --folds 4 \
        --handwriting indexer/siamese/pretrained/omniglot-encoder --out /tmp/signature-bench

The writers (WRITER/genuine, WRITER/forged) are split into folds. For each fold an encoder is trained on
the other folds' writers (their skilled forgeries are a class of their own, so the network learns to tell
them from the genuine signatures, as SigNet does; the test writers' forgeries are never seen), with
`python -m indexer.siamese train --mode signature`'s defaults. On the fold's writers, each writer's first 5
genuine signatures are the references and every other signature is questioned: genuine (same writer),
skilled forgery, and random (another test writer's genuine), each against one reference (the layout of the
data's pairs.csv), against all 5 (Verifier.enrol_and_compare, mean distance) and against all 5 relative to
their spread (reduce="relative"). Compared: that encoder fused with its companion image model (as signature mode
runs it), the same encoder alone; the handwriting encoder trained on Omniglot only (--handwriting); effnet-lite0's ImageNet features in
signature mode without a head. Accuracy is at the threshold each model ships with (never tuned on the
test writers); ROC AUC and EER separately for skilled and random forgeries. Mean +- SE over folds.
Never copies the images anywhere (the training folder holds symlinks). Slow: not part of the test suite.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.calibration import accuracy_at, equal_error_rate, roc_auc  # noqa: E402
from indexer.errors import UserInputError  # noqa: E402
from indexer.siamese.encoder import SiameseEncoder  # noqa: E402
from indexer.siamese.encoder_train import EncoderConfig, train_encoder  # noqa: E402
from indexer.siamese.cards import CARD_FILE, write_card  # noqa: E402
from indexer.siamese.head import load_head  # noqa: E402
from indexer.verify import Mode, Verifier  # noqa: E402

REFERENCES = 5
RELATIVE = f"{REFERENCES} references, relative"
FUSED = "stroke encoder + effnet-lite0, trained on signatures"


def writer_folds(root: Path, folds: int) -> list[list[str]]:
    writers = sorted(p.name for p in root.iterdir() if (p / "genuine").is_dir())
    return [writers[k::folds] for k in range(folds)]


def against(distances: np.ndarray, kinds: np.ndarray, forgery: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of the genuine trials and those of one kind of forgery: scores are negated distances (higher
    = more alike), labels 1 for genuine."""
    keep = (kinds == "genuine") | (kinds == forgery)
    return -distances[keep], (kinds[keep] == "genuine").astype(int)


def trials(root: Path, writers: list[str]) -> list[dict]:
    """Questioned signatures of `writers` with their claimed writer and kind; random ones claim the next writer."""
    rows = []
    for k, writer in enumerate(writers):
        genuine = sorted((root / writer / "genuine").glob("*.png"))
        for path in genuine[REFERENCES:]:
            rows.append({"claimed": writer, "questioned": path, "kind": "genuine"})
        for path in sorted((root / writer / "forged").glob("*.png")):
            rows.append({"claimed": writer, "questioned": path, "kind": "skilled"})
        other = writers[(k + 1) % len(writers)]
        for path in sorted((root / other / "genuine").glob("*.png"))[REFERENCES:]:
            rows.append({"claimed": writer, "questioned": path, "kind": "random"})
    return rows


def cached(verifier: Verifier) -> Verifier:
    """Each image embedded once, however many trials it appears in (enrol_and_compare re-embeds otherwise)."""
    memo: dict = {}
    represent_many = verifier.represent_many

    @functools.wraps(represent_many)
    def many(images, mode, names=None, on_multiple_faces=None):
        missing = [image for image in dict.fromkeys(images) if image not in memo]
        if missing:
            memo.update(zip(missing, represent_many(missing, mode)))
        return [memo[image] for image in images]

    verifier.represent_many = many
    return verifier


def score(verifier: Verifier, root: Path, writers: list[str]) -> dict:
    rows = trials(root, writers)
    refs = {w: sorted((root / w / "genuine").glob("*.png"))[:REFERENCES] for w in writers}
    threshold = verifier.threshold(Mode.SIGNATURE)
    try:
        relative = verifier.enrolment_threshold(Mode.SIGNATURE)
    except UserInputError:  # no enrolment threshold on the card (ImageNet features): AUC and EER only
        relative = None
    out = {"threshold": threshold.value, "threshold_source": threshold.source,
           "relative_threshold": relative.value if relative else None}
    settings = {"1 reference": ("mean", threshold), f"{REFERENCES} references": ("mean", threshold),
                RELATIVE: ("relative", relative)}
    for setting, (reduce, chosen) in settings.items():
        distances = []
        for n, row in enumerate(rows):
            claimed = refs[row["claimed"]]
            references = [claimed[n % REFERENCES]] if setting == "1 reference" else claimed
            distances.append(verifier.enrol_and_compare(references, row["questioned"], Mode.SIGNATURE, reduce,
                                                        threshold=chosen.value if chosen else 1.0).distance)
        distances = np.asarray(distances)
        kinds = np.array([row["kind"] for row in rows])
        for forgery in ("skilled", "random"):
            scores, labels = against(distances, kinds, forgery)
            eer, point = equal_error_rate(scores, labels)
            out[f"{setting}/{forgery}"] = {
                "accuracy": accuracy_at(scores, labels, -chosen.value) if chosen else None, "auc": roc_auc(scores, labels),
                "eer": eer, "eer_distance": -point, "genuine": int(labels.sum()), "forgeries": int((1 - labels).sum()),
            }
        if reduce == "relative":  # kept for cross_fitted: every fold's scores at the other folds' threshold
            out["relative scores"] = {"distances": distances.tolist(), "kinds": kinds.tolist()}
    return out


def cross_fitted(results: list[dict], model: str) -> dict | None:
    """The relative threshold a recipe can carry to writers it never saw: each fold's equal-error point against skilled
    forgeries (on its held-out writers), and each fold's accuracy at the mean of the OTHER folds' points. Three
    validation writers inside a training fold put the card's point at 1.88-2.16 where held-out writers' lay at
    1.45-1.61; 18 held-out writers per estimate are steadier."""
    mine = sorted((r for r in results if r["model"] == model and "relative scores" in r), key=lambda r: r["fold"])
    if len(mine) < 2:
        return None
    points = [r[f"{RELATIVE}/skilled"]["eer_distance"] for r in mine]
    accuracy: dict[str, list[float]] = {"skilled": [], "random": []}
    for k, r in enumerate(mine):
        threshold = float(np.mean(points[:k] + points[k + 1:]))
        distances, kinds = np.asarray(r["relative scores"]["distances"]), np.asarray(r["relative scores"]["kinds"])
        for forgery, values in accuracy.items():
            values.append(accuracy_at(*against(distances, kinds, forgery), -threshold))
    return {"threshold": float(np.mean(points)), "points": points, "accuracy": accuracy}


def write_fit(folder: Path, fit: dict, command: str) -> None:
    """Set the enrolment threshold of the encoder in `folder` (its companion's, when fused) to the folds' mean
    held-out equal-error point; the trainer's threshold and figures on its validation writers move to `validation`."""
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    section = card["companion"]["enrolment"] if card.get("companion") else card["enrolment"]
    if "validation" not in section:  # the trainer's own figures, on its validation writers, kept for reference
        section["validation"] = {key: section.pop(key) for key in ("threshold", "eer", "auc", "accuracy", "how")
                                 if key in section}
    points = ", ".join(f"{p:.3f}" for p in fit["points"])
    section.update(threshold=fit["threshold"], command=command, how=(
        f"equal-error point against skilled forgeries on writers never seen in training: the mean over {len(fit['points'])} "
        f"writer folds' encoders of this recipe ({points}); accuracy at the other folds' mean: skilled forgeries "
        f"{np.mean(fit['accuracy']['skilled']):.1%}, random {np.mean(fit['accuracy']['random']):.1%}"))
    write_card(folder, card)


def link_writers(folder: Path, root: Path, writers: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for writer in writers:
        if not (folder / writer).exists():
            os.symlink((root / writer).resolve(), folder / writer, target_is_directory=True)
    return folder


def mean_se(values) -> str:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{values.mean():.1%} +- {se:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signatures", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--only-folds", type=int, nargs="*", help="run these folds only (0-based), e.g. to split the work")
    parser.add_argument("--handwriting", type=Path, help="an encoder trained on Omniglot only, to compare")
    parser.add_argument("--no-effnet", action="store_true", help="skip the ImageNet-features baseline")
    parser.add_argument("--steps", type=int, help="training steps (default: the trainer's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--write-card", type=Path, metavar="ENCODER_DIR",
                        help="set this encoder's enrolment threshold to the folds' mean held-out point (see cross_fitted)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the trainer: two OpenMP threads crawl on a shared 2-core machine

    folds = writer_folds(args.signatures, args.folds)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else []
    for k, test_writers in enumerate(folds):
        if args.only_folds is not None and k not in args.only_folds:
            continue
        train_writers = [w for fold in folds for w in fold if w not in test_writers]
        train_dir = link_writers(args.out / f"train-fold{k}", args.signatures, train_writers)
        config = EncoderConfig(dataset=str(train_dir), out=str(args.out / f"model-fold{k}"), seed=args.seed,
                               progress=sys.stderr.isatty())
        if args.steps:
            config.steps = args.steps
        load, started = os.getloadavg()[0], time.perf_counter()
        trained = Path(config.out) / "card.json"
        if trained.is_file():  # trained by an earlier run of this script: score it again (e.g. beside new baselines)
            encoder = load_head(config.out)
            minutes = encoder.card["training"]["seconds_total"] / 60
        else:
            encoder = train_encoder(config).encoder
            minutes = (time.perf_counter() - started) / 60
        models = {FUSED: Verifier(None, heads=[encoder])}
        if encoder.card.get("companion"):  # the same encoder without its companion, at its own thresholds
            alone = SiameseEncoder(encoder.module, {k: v for k, v in encoder.card.items() if k != "companion"}, encoder.source)
            models["stroke encoder alone, trained on signatures"] = Verifier(None, heads=[alone])
        if args.handwriting and (args.handwriting / "card.json").is_file():
            models["stroke encoder, trained on Omniglot only"] = Verifier(None, heads=[load_head(args.handwriting)])
        elif args.handwriting:
            print(f"no encoder in {args.handwriting} yet: run again later to add it (trained folds are reused)", flush=True)
        if not args.no_effnet:
            from indexer.models import load_embedder

            models["effnet-lite0 ImageNet features, no head"] = Verifier(load_embedder("effnet-lite0"))
        for name, verifier in models.items():
            result = score(cached(verifier), args.signatures, test_writers)
            results = [r for r in results if (r["fold"], r["model"]) != (k, name)]
            results.append({"fold": k, "model": name, "test_writers": test_writers, "train_minutes": round(minutes, 1),
                            "load_before": round(load, 2), **result})
            print(f"fold {k} {name}: " + ", ".join(f"{key} EER {v['eer']:.1%} acc " + (f"{v['accuracy']:.1%}" if v["accuracy"] is not None else "n/a")
                                                    for key, v in result.items() if isinstance(v, dict) and "eer" in v), flush=True)
        results_file.write_text(json.dumps(results, indent=1, default=str))
    print_table(results)
    fit = cross_fitted(results, FUSED)
    if fit:
        print(f"\n{RELATIVE}, {FUSED}: threshold from the other folds' held-out writers ({', '.join(f'{p:.3f}' for p in fit['points'])}): "
              f"accuracy skilled {mean_se(fit['accuracy']['skilled'])}, random {mean_se(fit['accuracy']['random'])}")
        if args.write_card:
            write_fit(args.write_card, fit, shlex.join(["python", "benchmarks/signature_encoder.py", *sys.argv[1:]]))
            print(f"{args.write_card}/{CARD_FILE}: enrolment threshold {fit['threshold']:.3f} (the folds' mean)")
    elif args.write_card:
        print(f"--write-card: {args.write_card} left as it was; the threshold needs the results of 2 or more folds.")


def print_table(results: list[dict]) -> None:
    print("\n| model | references | forgeries | accuracy at shipped threshold | ROC AUC | EER | folds |")
    print("|---|---|---|---|---|---|---|")
    for model in dict.fromkeys(r["model"] for r in results):
        mine = [r for r in results if r["model"] == model]
        for key in [k for k in mine[0] if "/" in k]:
            setting, forgery = key.split("/")
            cells = [mean_se([r[key][m] for r in mine]) if all(r[key][m] is not None for r in mine) else "n/a"
                     for m in ("accuracy", "auc", "eer")]
            print(f"| {model} | {setting} | {forgery} | {' | '.join(cells)} | {len(mine)} |")


if __name__ == "__main__":
    main()
