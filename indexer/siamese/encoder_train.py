"""Train a stroke encoder (indexer.siamese.encoder) end to end on identity-labelled ink images.

Every image is prepared once (ink crop at twice the working size) and kept in memory as one tensor; each
step draws a batch of P identities x K images (an episode: for the prototypical loss, the first image of a
class is its support, the other K-1 its queries), distorts it on the fly (indexer.siamese.distort) and
takes one AdamW step; the learning rate follows a cosine from `lr` down to 1% of it. With `rotations`, each
character turned by 90, 180 and 270 degrees is a class of its own (Omniglot: 4x the classes).

Validation uses whole groups of identities (an identity's parent folder: an alphabet, a writer) never seen
in training: N-way one-shot accuracy on fixed episodes decides early stopping and which weights are kept,
and the threshold is the equal-error-rate one on their pairs. A checkpoint (safetensors + JSON, no pickle)
is written every `checkpoint_seconds` and on Ctrl-C; the same command resumes from it. Deterministic for a
given seed (one torch.Generator drives sampling and augmentation, and is checkpointed).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..calibration import calibrate, roc_auc
from ..errors import UserInputError
from ..sources import LabelledImages, load_labelled
from .checkpoint import Checkpoint
from .distort import distort, rotate_quarters
from ..signature import ink_crop
from .encoder import (ARCHITECTURES, DEFAULT_ARCHITECTURE, ENCODER_FORMAT, SiameseEncoder, architecture, build_encoder,
                      ink_pixels)
from .losses import SiameseLoss
from .validation import companion_card, enrolment_card, group_of, pair_scores

WIDE_INK = 1.8  # median width / height of the ink above which the data are signatures, not characters


@dataclass
class EncoderConfig:
    dataset: str = ""
    out: str | None = None
    architecture: str | None = None  # None: conv4-sig for wide ink (signatures), conv4-28 for characters
    loss: str = "proto"
    # None: the architecture's own defaults (ARCHITECTURES[...]["train"]; Conv-4 on characters: 1800 steps of
    # 60 identities x 6 images, proto's 1 support + 5 queries)
    ways: int | None = None  # P: identities per step
    per_class: int | None = None  # K: images per identity per step
    steps: int | None = None
    lr: float = 2e-3
    weight_decay: float = 5e-4
    margin: float | None = None
    rotations: bool | None = None  # None: on for square (character) inputs, off for signatures
    # an image model spec to fuse with in signature mode (siamese.fused), its thresholds calibrated here; None: the
    # architecture's default (effnet-lite0 for signatures); "none": no companion
    companion: str | None = None
    thickness: bool = True
    val_fraction: float = 0.15  # of identities, by whole groups
    val_groups: tuple[str, ...] = ()  # these groups (folders: alphabets, writers) validate instead of a drawn fraction
    val_every: int | None = None
    patience: int = 6  # validations without gain before stopping
    val_ways: int = 20
    seed: int = 0
    # One thread: on the shared 2-core machine a step took 0.47 s on one thread and 3.8 s on two while other
    # processes ran (each OpenMP barrier waits for the preempted thread). Two seeds can run side by side.
    threads: int | None = 1
    bf16: bool = True  # bf16 autocast, channels-last: 3.5x faster steps on a CPU with AMX (fp32 weights kept)
    checkpoint_seconds: float = 60.0
    progress: bool = True
    command: str = ""  # how this run was started, for the card
    data_terms: str = ""  # the training data's source and terms of use, for the card


@dataclass
class EncoderResult:
    encoder: SiameseEncoder
    history: list[dict] = field(default_factory=list)
    out: Path | None = None
    resumed_from: int = 0


def split_groups(identities: list[str], val_fraction: float, seed: int,
                 chosen: tuple[str, ...] = ()) -> tuple[set[str], set[str]]:
    """(train, validation) identity sets, whole groups apart; validation gets >= val_fraction of identities, or the
    `chosen` groups when given."""
    groups = sorted({group_of(i) for i in identities})
    if len(groups) < 2:
        raise ValueError("Training needs identities in at least two groups (folders) to validate on unseen ones.")
    if chosen:
        missing = sorted(set(chosen) - set(groups))
        if missing or set(chosen) >= set(groups):
            problem = f"no group {missing} in the data" if missing else "no group would be left to train on"
            raise UserInputError(f"--val-groups: {problem}. Name some of the folders that hold identities: "
                                 f"{', '.join(groups[:12])}{' ...' if len(groups) > 12 else ''}.")
        val = {i for i in identities if group_of(i) in chosen}
        return set(identities) - val, val
    random.Random(seed).shuffle(groups)
    unique = sorted(set(identities))
    val_groups: set[str] = set()
    for group in groups[:-1]:
        if sum(group_of(i) in val_groups for i in unique) >= val_fraction * len(unique):
            break
        val_groups.add(group)
    val = {i for i in unique if group_of(i) in val_groups}
    return set(unique) - val, val


def choose_architecture(images, name: str | None) -> str:
    """`name`, else conv4-sig when the ink is wide (signatures), else conv4-28 (characters, drawings)."""
    if name:
        architecture(name)  # a clear error for an unknown name
        return name
    ratios = []
    for image in images[:: max(1, len(images) // 40)][:40]:
        try:
            ink = ink_crop(image) < 255
        except ValueError:
            continue
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        ratios.append((cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1))
    wide = bool(ratios) and float(np.median(ratios)) > WIDE_INK
    return DEFAULT_ARCHITECTURE["signature" if wide else "strokes"]


def prepare_all(images, size, progress: bool, crop: bool = True) -> tuple[torch.Tensor, list[int]]:
    """(n, 2H, 2W) ink tensors (float16 to halve the memory) and the indices of the images that had ink."""
    from concurrent.futures import ThreadPoolExecutor

    def one(image):
        try:
            return ink_pixels(image, size, crop=crop)
        except ValueError:
            return None

    with ThreadPoolExecutor(4) as pool:
        prepared = list(tqdm(pool.map(one, images), total=len(images), desc="preparing ink", unit="img", disable=not progress))
    kept = [k for k, p in enumerate(prepared) if p is not None]
    return torch.from_numpy(np.stack([prepared[k] for k in kept])).half(), kept


class EpisodeSampler:
    """P classes x K images per step; with rotations, class c*4+q is identity c turned q quarter turns."""

    def __init__(self, labels: np.ndarray, ways: int, per_class: int, rotations: bool, generator: torch.Generator):
        self.by_label = [torch.from_numpy(np.flatnonzero(labels == label)) for label in range(labels.max() + 1)]
        self.turns = 4 if rotations else 1
        self.classes = len(self.by_label) * self.turns
        self.ways, self.per_class, self.generator = min(ways, self.classes), per_class, generator

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image indices, quarter turns, class labels)"""
        chosen = torch.randperm(self.classes, generator=self.generator)[: self.ways]
        index = []
        for c in chosen.tolist():
            members = self.by_label[c // self.turns]
            if len(members) >= self.per_class:
                pick = torch.randperm(len(members), generator=self.generator)[: self.per_class]
            else:
                pick = torch.randint(len(members), (self.per_class,), generator=self.generator)
            index.append(members[pick])
        labels = chosen.repeat_interleave(self.per_class)
        return torch.cat(index), labels % self.turns, labels


def oneshot_accuracy(vectors: np.ndarray, labels: np.ndarray, ways: int, episodes: int = 300, seed: int = 0) -> float:
    """Mean accuracy of N-way one-shot episodes (one support and one query per class) on fixed draws."""
    rng = np.random.default_rng(seed)
    by_label = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    by_label = [members for members in by_label if len(members) >= 2]
    ways = min(ways, len(by_label))
    correct = 0
    for _ in range(episodes):
        classes = rng.choice(len(by_label), ways, replace=False)
        pairs = np.array([rng.choice(by_label[c], 2, replace=False) for c in classes])
        similarity = vectors[pairs[:, 1]] @ vectors[pairs[:, 0]].T
        correct += int((similarity.argmax(1) == np.arange(ways)).sum())
    return correct / (episodes * ways)


def _embed(model, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        out = torch.cat([model(x[i : i + 512].float()[:, None]) for i in range(0, len(x), 512)]).numpy()
    model.train()
    return out


def train_encoder(config: EncoderConfig, data: LabelledImages | None = None) -> EncoderResult:
    started = time.perf_counter()
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, data, started)
    finally:
        torch.set_num_threads(threads)


def _train(config: EncoderConfig, data: LabelledImages | None, started: float) -> EncoderResult:
    torch.manual_seed(config.seed)
    data = data or load_labelled(config.dataset)
    name = choose_architecture(data.images, config.architecture)
    config = replace(config, architecture=name)
    arch = ARCHITECTURES[name]
    config = replace(config, **{k: v for k, v in arch["train"].items() if getattr(config, k) is None})
    size = arch["size"]
    rotations = (size[0] == size[1]) if config.rotations is None else config.rotations
    if rotations and size[0] != size[1]:
        raise ValueError(f"Rotations as extra classes need a square input; {name} is {size[0]}x{size[1]}.")
    train_ids, val_ids = split_groups(data.identities, config.val_fraction, config.seed, tuple(config.val_groups))
    pixels, kept = prepare_all(data.images, size, config.progress, arch.get("crop", True))
    identities = [data.identities[k] for k in kept]
    train_rows = [r for r, i in enumerate(identities) if i in train_ids]
    val_rows = [r for r, i in enumerate(identities) if i in val_ids]
    label_of = {identity: n for n, identity in enumerate(sorted(train_ids))}
    y_train = np.array([label_of[identities[r]] for r in train_rows])
    x_train, x_val = pixels[train_rows], pixels[val_rows]
    val_identities = [identities[r] for r in val_rows]
    val_labels = np.unique(val_identities, return_inverse=True)[1]
    prepare_seconds = time.perf_counter() - started

    model = build_encoder(name)
    layout = torch.channels_last if config.bf16 else torch.contiguous_format
    model.to(memory_format=layout)
    criterion = SiameseLoss(config.loss, config.margin, dim=model.dim)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(criterion.parameters()), lr=config.lr,
                                  weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    sampler = EpisodeSampler(y_train, config.ways, config.per_class, rotations, generator)
    checkpoint = Checkpoint(Path(config.out) / "checkpoint" if config.out else None, _resumable(config))
    state = checkpoint.load(model, criterion, optimizer, generator)
    resumed_from = state["step"]

    def validate() -> float:
        return oneshot_accuracy(_embed(model, x_val), val_labels, config.val_ways, seed=config.seed)

    if state["step"] == 0:
        state.update(best=validate(), best_step=0, waited=0, history=[])
        checkpoint.keep_best(model, criterion)
    bar = tqdm(total=config.steps, initial=state["step"], desc=f"train {name} ({config.loss})", unit="step",
               disable=not config.progress)
    last_save, losses, t0 = time.monotonic(), [], time.perf_counter()
    try:
        model.train()
        while state["step"] < config.steps and state["waited"] < config.patience:
            step = state["step"]
            for group in optimizer.param_groups:  # cosine from lr to lr/100
                group["lr"] = config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
            index, turns, labels = sampler.batch()
            x = x_train[index].float()[:, None]
            x = distort(rotate_quarters(x, turns) if rotations else x, generator, config.thickness)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                z = model(x.contiguous(memory_format=layout))
            loss = criterion(z.float(), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            state["step"] = step + 1
            bar.update(1)
            if state["step"] % config.val_every == 0 or state["step"] == config.steps:
                accuracy = validate()
                state["history"].append({"step": state["step"], "train_loss": float(np.mean(losses)), "val_oneshot": accuracy})
                losses = []
                if accuracy > state["best"]:
                    state.update(best=accuracy, best_step=state["step"], waited=0)
                    checkpoint.keep_best(model, criterion)
                else:
                    state["waited"] += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{state['best']:.3f}")
            if time.monotonic() - last_save > config.checkpoint_seconds:
                checkpoint.save(model, criterion, optimizer, generator, state)
                last_save = time.monotonic()
    except KeyboardInterrupt:
        checkpoint.save(model, criterion, optimizer, generator, state)
        bar.close()
        raise SystemExit(f"Interrupted at step {state['step']}; run the same command again to resume from there.")
    bar.close()
    train_seconds = time.perf_counter() - t0
    checkpoint.restore_best(model, criterion)
    model.eval().to(memory_format=torch.contiguous_format)
    views = {"test_time_views": arch.get("test_time_views", 1)}
    # the threshold is calibrated on the vectors the app will compare: with the card's test-time views
    embed = SiameseEncoder(model, views).embed
    vectors = embed(x_val.float())
    scores, same = pair_scores(vectors, val_identities)
    calibration = calibrate(scores, same)
    fused_card, centres = companion_card(config.companion, embed, (x_train, [data.images[kept[r]] for r in train_rows]),
                                         (vectors, [data.images[kept[r]] for r in val_rows], val_identities), calibration,
                                         config.seed)
    card = {
        "format": ENCODER_FORMAT,
        "mode": "signature",
        "architecture": {"name": name, "config": arch, "parameters": sum(p.numel() for p in model.parameters())},
        "metric": "cosine distance",
        "loss": config.loss,
        **views,
        "threshold": {
            "value": 1.0 - calibration.threshold,
            "criterion": "equal error rate",
            "how": (f"equal-error-rate threshold on {calibration.n_same + calibration.n_different} pairs of {len(val_ids)} "
                    f"identities from {len({group_of(i) for i in val_ids})} folders (writers, alphabets) never seen in training"),
        },
        **enrolment_card(vectors, val_identities, len({group_of(i) for i in val_ids})),
        **fused_card,
        "metrics": {
            "val_oneshot_accuracy": state["best"], "val_oneshot_ways": min(config.val_ways, len(val_ids)),
            "val_auc": roc_auc(scores, same), "val_eer": calibration.eer,
            "val_accuracy_at_threshold": calibration.accuracy,
        },
        "data": {
            "dataset": data.description, "terms": config.data_terms, "images": len(identities), "skipped_without_ink": len(data.images) - len(kept),
            "train_identities": len(train_ids), "val_identities": len(val_ids),
            "val_groups": sorted({group_of(i) for i in val_ids}),
        },
        "training": {
            "steps_run": state["step"], "best_step": state["best_step"], "history": state["history"],
            "resumed_from_step": resumed_from, "seconds_preparing": round(prepare_seconds, 1),
            "seconds_training": round(train_seconds, 1), "seconds_total": round(time.perf_counter() - started, 1),
            "torch_threads": torch.get_num_threads(), "rotations_as_classes": rotations,
            "augmentation": "random affine (rotation 10 deg, shear 0.3, scale 0.8-1.2, shift 5%)"
                            + (", stroke thickness +-1 px" if config.thickness else ""),
            "config": {k: v for k, v in asdict(config).items() if k not in ("progress", "command")},
            "command": config.command,
        },
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    encoder = SiameseEncoder(model.eval(), card, source=str(config.out or "(in memory)"), centres=centres)
    out = encoder.save(config.out) if config.out else None
    checkpoint.remove()
    return EncoderResult(encoder, state["history"], out, resumed_from)


def _resumable(config: EncoderConfig) -> str:
    """What must match for a checkpoint to be resumed: everything that changes the run's course."""
    keep = {k: v for k, v in asdict(config).items() if k not in ("progress", "out", "command", "checkpoint_seconds", "threads", "data_terms")}
    # Named validation groups in any order are the same run; none named matches checkpoints from before the option.
    groups = keep.pop("val_groups")
    if groups:
        keep["val_groups"] = sorted(set(groups))
    return json.dumps(keep, sort_keys=True)
