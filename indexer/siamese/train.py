"""Train a Siamese projection head on identity-labelled images.

The backbone is frozen, so each image's views (one clean, the rest augmented) are embedded once and
cached; epochs then only run the small head. With `fine_tune_blocks = N > 0` the cache holds the trunk's
output (everything below the last N blocks) instead, and epochs run a copy of the last N blocks (at
`top_lr_factor` x the head's learning rate, BatchNorm statistics kept frozen) plus the head; the shared
backbone itself never changes. Batches hold P identities x K images and use every pair
or triplet inside them. Validation uses identities never seen in training; training stops early when
their ROC AUC stops improving, and the threshold is calibrated on them (equal error rate).
"""
from __future__ import annotations

import copy
import datetime as dt
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..augment import all_pairs, augment_for
from ..calibration import calibrate, roc_auc
from ..models import load_embedder
from ..models.base import Embedder
from ..verify import Mode, prepare
from ..sources import LabelledImages, load_labelled
from .head import CARD_FORMAT, ProjectionHead, SiameseHead, forward_top
from .losses import SiameseLoss

FEATURE_CHUNK = 64


@dataclass
class TrainConfig:
    dataset: str = ""
    out: str | None = None
    identity_column: str | None = None
    image_column: str | None = None
    loss: str = "triplet"  # measured best on Omniglot one-shot (docs/VERIFICATION.md)
    backbone: str = "effnet-lite0"
    mode: str = "general"  # preprocessing and augmentation: "general" (photos, faces) or "signature" (strokes)
    views: int = 3  # per image: 1 clean + (views - 1) augmented, embedded once
    val_fraction: float = 0.2  # of identities, held out entirely
    epochs: int = 40
    patience: int = 5
    steps_per_epoch: int | None = None  # default: about one pass over the training images
    batch_identities: int = 16  # P
    per_identity: int = 4  # K
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden_dim: int = 512
    out_dim: int = 128
    dropout: float = 0.1
    margin: float | None = None
    max_per_identity: int | None = None
    seed: int = 0
    feature_cache: str | None = None  # folder to keep backbone features in, reused by later runs on the same data
    fine_tune_blocks: int = 0  # also train a copy of the backbone's last N blocks (0: head only)
    top_lr_factor: float = 0.1  # those blocks learn at lr x this: pretrained weights need small steps
    progress: bool = True


@dataclass
class TrainResult:
    head: SiameseHead
    history: list[dict] = field(default_factory=list)
    out: Path | None = None


def split_identities(identities: Sequence[str], val_fraction: float, seed: int) -> tuple[set, set, set]:
    """(train, validation, dropped) identity sets; identities with a single image cannot form pairs."""
    counts: dict[str, int] = {}
    for identity in identities:
        counts[identity] = counts.get(identity, 0) + 1
    usable = sorted(i for i, n in counts.items() if n >= 2)
    dropped = set(counts) - set(usable)
    if len(usable) < 4:
        raise ValueError(f"Training needs at least 4 identities with 2+ images each; found {len(usable)}.")
    random.Random(seed).shuffle(usable)
    n_val = min(len(usable) - 2, max(2, round(val_fraction * len(usable))))
    return set(usable[n_val:]), set(usable[:n_val]), dropped


def extract_features(
    embedder: Embedder, images: Sequence, mode: Mode, views: int, seed: int, progress: bool = True, desc: str = "features",
    trunk_blocks: int = 0,
) -> np.ndarray:
    """(n, views, dim) backbone embeddings: view 0 is the clean prepared image, the others augmented.
    With `trunk_blocks` > 0: (n, views, *trunk shape) trunk features below the last `trunk_blocks` blocks."""
    rng = random.Random(seed)
    augment = augment_for(mode)
    out = None
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(images), FEATURE_CHUNK):
            batch = []
            for index in range(start, min(start + FEATURE_CHUNK, len(images))):
                clean = prepare(images[index], mode)
                batch += [clean] + [augment(clean, rng) for _ in range(views - 1)]
            if trunk_blocks:
                vectors = embedder.encode_trunk(batch, trunk_blocks).numpy()
            else:
                vectors = embedder.encode_images(batch)
            if out is None:
                out = np.zeros((len(images), views, *vectors.shape[1:]), dtype=np.float32)
            out[start : start + len(batch) // views] = vectors.reshape(-1, views, *vectors.shape[1:])
            bar.update(len(batch) // views)
    return out


def _cosine_auc(vectors: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    i, j, same = all_pairs(list(labels))
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
    scores = np.sum(v[i] * v[j], axis=1)
    return roc_auc(scores, same), scores, same


def _cache_path(folder: str | None, key: list) -> Path | None:
    if not folder:
        return None
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]
    return Path(folder) / f"features-{digest}.npy"


def _in_chunks(function, x: np.ndarray, size: int = 256) -> np.ndarray:
    """`function` (no gradients) over cached features in chunks: fine-tuned blocks on all of them at once
    would hold every activation in memory."""
    with torch.no_grad():
        return np.concatenate([function(torch.from_numpy(x[i : i + size])).numpy() for i in range(0, len(x), size)])


class _Sampler:
    """P identities x K images, each image in a random one of its cached views."""

    def __init__(self, labels: np.ndarray, views: int, p: int, k: int, seed: int):
        self.by_label = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
        self.labels, self.views = list(self.by_label), views
        self.p, self.k = min(p, len(self.labels)), k
        self.rng = np.random.default_rng(seed)

    def batch(self, clean: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        chosen = self.rng.choice(len(self.labels), self.p, replace=False)
        index = np.concatenate([
            self.rng.choice(self.by_label[self.labels[c]], self.k, replace=len(self.by_label[self.labels[c]]) < self.k)
            for c in chosen
        ])
        view = np.zeros(len(index), int) if clean else self.rng.integers(0, self.views, len(index))
        return index, view, np.repeat(chosen, self.k)


def train(config: TrainConfig, data: LabelledImages | None = None, embedder: Embedder | None = None) -> TrainResult:
    """Train a head as `config` says; saves it to `config.out` when set."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    mode = Mode(config.mode)
    if mode is Mode.FACE:
        raise ValueError("Face mode uses dlib's trained face descriptor; train heads in general or signature mode.")
    data = data or load_labelled(config.dataset, config.identity_column, config.image_column)
    embedder = embedder or load_embedder(config.backbone)
    top = embedder.top_module(config.fine_tune_blocks) if config.fine_tune_blocks else None  # unsupported: fails here
    train_ids, val_ids, dropped = split_identities(data.identities, config.val_fraction, config.seed)

    def select(wanted: set) -> list[int]:
        taken: dict[str, int] = {}
        chosen = []
        for index, identity in enumerate(data.identities):
            if identity in wanted and taken.get(identity, 0) < (config.max_per_identity or 1 << 30):
                taken[identity] = taken.get(identity, 0) + 1
                chosen.append(index)
        return chosen

    train_index, val_index = select(train_ids), select(val_ids)
    train_images = [data.images[i] for i in train_index]
    val_images = [data.images[i] for i in val_index]
    label_of = {identity: n for n, identity in enumerate(sorted(train_ids | val_ids))}
    y_train = np.array([label_of[data.identities[i]] for i in train_index])
    y_val = np.array([label_of[data.identities[i]] for i in val_index])

    t0 = time.perf_counter()

    def features(images, index, views, desc):
        key = [embedder.name, data.description, mode.value, views, config.seed, [data.identities[i] for i in index]]
        if config.fine_tune_blocks:
            key.append(["trunk", config.fine_tune_blocks])
        path = _cache_path(config.feature_cache, key)
        if path is not None and path.is_file():
            return np.load(path, allow_pickle=False)
        array = extract_features(embedder, images, mode, views, config.seed, config.progress, desc, config.fine_tune_blocks)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, array, allow_pickle=False)
        return array

    x_train = torch.from_numpy(features(train_images, train_index, config.views, "train features"))
    x_val = features(val_images, val_index, 1, "validation features")[:, 0]
    feature_seconds = time.perf_counter() - t0

    module = ProjectionHead(embedder.dim, config.hidden_dim, config.out_dim, config.dropout)
    criterion = SiameseLoss(config.loss, config.margin)
    groups = [{"params": list(module.parameters()) + list(criterion.parameters())}]
    if top is not None:
        # eval mode throughout: BatchNorm keeps the backbone's running statistics (P x K batches are small);
        # its scale and shift still train, as do all convolutions.
        top.eval()
        groups.append({"params": list(top.parameters()), "lr": config.lr * config.top_lr_factor})
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return module(x) if top is None else forward_top(top, module, x)

    def trainable() -> list[nn.Module]:
        return [module, criterion] + ([top] if top is not None else [])

    sampler = _Sampler(y_train, config.views, config.batch_identities, config.per_identity, config.seed)
    probe = [sampler.batch(clean=True) for _ in range(8)]  # fixed batches: the loss before vs after training
    y_t = torch.from_numpy(y_train)

    def probe_loss() -> float:
        module.eval()
        with torch.no_grad():
            return float(np.mean([criterion(embed(x_train[i, v]), y_t[i]).item() for i, v, _ in probe]))

    def val_auc() -> float:
        module.eval()
        return _cosine_auc(_in_chunks(embed, x_val), y_val)[0]

    backbone_auc = _cosine_auc(x_val if top is None else _in_chunks(top, x_val), y_val)[0]
    loss_before, best_auc = probe_loss(), val_auc()
    best_state, best_epoch, history, waited = copy.deepcopy([m.state_dict() for m in trainable()]), 0, [], 0
    steps = config.steps_per_epoch or max(1, len(train_index) // (sampler.p * sampler.k))
    t1 = time.perf_counter()
    with tqdm(range(1, config.epochs + 1), desc=f"train ({config.loss})", unit="epoch", disable=not config.progress) as bar:
        for epoch in bar:
            module.train()
            losses = []
            for _ in range(steps):
                index, view, _ = sampler.batch()
                loss = criterion(embed(x_train[index, view]), y_t[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            auc = val_auc()
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_auc": auc})
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", val_auc=f"{auc:.4f}", best=f"{best_auc:.4f}")
            if auc > best_auc + 1e-4:
                best_auc, best_epoch, waited = auc, epoch, 0
                best_state = copy.deepcopy([m.state_dict() for m in trainable()])
            else:
                waited += 1
                if waited >= config.patience:
                    break
    train_seconds = time.perf_counter() - t1
    for part, state in zip(trainable(), best_state):
        part.load_state_dict(state)
    loss_after = probe_loss()
    module.eval()
    auc, scores, same = _cosine_auc(_in_chunks(embed, x_val), y_val)
    calibration = calibrate(scores, same)

    card = {
        "format": CARD_FORMAT,
        "backbone": embedder.name,
        "mode": mode.value,
        "loss": config.loss,
        "margin": criterion.margin,
        "metric": "cosine distance",
        "fine_tune_blocks": config.fine_tune_blocks,
        "architecture": {"in_dim": embedder.dim, "hidden_dim": config.hidden_dim, "out_dim": config.out_dim, "dropout": config.dropout,
                         "fine_tune_blocks": config.fine_tune_blocks,
                         "top_lr": config.lr * config.top_lr_factor if config.fine_tune_blocks else None},
        "threshold": {
            "value": 1.0 - calibration.threshold,
            "criterion": "equal error rate",
            "how": (
                f"equal-error-rate threshold on {calibration.n_same + calibration.n_different} validation pairs "
                f"of {len(val_ids)} identities not seen in training"
            ),
        },
        "data": {
            "dataset": data.description,
            "train_images": len(train_index),
            "val_images": len(val_index),
            "train_identities": len(train_ids),
            "val_identities": len(val_ids),
            "dropped_identities_with_one_image": len(dropped),
        },
        "metrics": {
            "val_auc": auc,
            "val_eer": calibration.eer,
            "val_accuracy_at_threshold": calibration.accuracy,
            "val_auc_backbone_only": backbone_auc,
            "train_loss_before": loss_before,
            "train_loss_after": loss_after,
        },
        "training": {
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "seconds_features": round(feature_seconds, 1),
            "seconds_training": round(train_seconds, 1),
            "seconds_total": round(time.perf_counter() - started, 1),
            "torch_threads": torch.get_num_threads(),
            "augmentation": f"{config.views - 1} augmented view(s) per image ({augment_for(mode).__name__})",
            "config": {k: v for k, v in asdict(config).items() if k not in ("progress",)},
        },
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    head = SiameseHead(module.eval(), card, source=str(config.out or "(in memory)"), top=top)
    out = head.save(config.out) if config.out else None
    return TrainResult(head, history, out)
