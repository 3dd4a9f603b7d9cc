"""Scores on identities held out of training, and the card sections calibrated from them (the trainer's side).

Identities are folder paths: an identity's parent folder is its group (a writer, an alphabet), and an identity
named like FORGERY_FOLDERS holds skilled forgeries of its parent's writer.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..calibration import calibrate, relative_distance, roc_auc
from .fused import companion_parts, fuse

FORGERY_FOLDERS = ("forged", "forgeries", "forgery", "skilled")  # identity = forgeries of its parent's writer
ENROLMENT_REFERENCES = 5  # references per enrolment when the card's relative threshold is calibrated
CENTRE_IMAGES = 1000  # training images (at most) whose mean is each fused block's centre
COMPANION_BATCH = 16


def group_of(identity: str) -> str:
    parent = identity.rpartition("/")[0]
    return parent or identity


def is_forgery(identity: str) -> bool:
    return identity.rpartition("/")[2].lower() in FORGERY_FOLDERS


def pair_scores(vectors: np.ndarray, identities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and same/different of every pair; two forgeries of one writer are not a pair
    (different forgers may have made them)."""
    i, j = np.triu_indices(len(identities), k=1)
    ids = np.asarray(identities, dtype=object)
    forged = np.array([is_forgery(x) for x in identities])
    keep = ~(forged[i] & forged[j])
    i, j = i[keep], j[keep]
    return np.sum(vectors[i] * vectors[j], axis=1), (ids[i] == ids[j]).astype(np.int8)


def enrolment_scores(vectors: np.ndarray, identities: list[str], references: int = ENROLMENT_REFERENCES,
                     seed: int = 0, forgeries_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Relative distances (calibration.relative_distance) of questioned images to enrolments, and same/different.

    Each genuine identity with more than `references` images is enrolled with its first `references`; questioned
    are its other images (same), the forgeries of its writer and (unless `forgeries_only`) as many genuine images
    of other identities (different). Cosine distances of L2-normalised `vectors`."""
    ids = np.asarray(identities, dtype=object)
    forgery = np.array([is_forgery(i) for i in identities], dtype=bool)
    groups = np.array([group_of(i) for i in identities], dtype=object)
    rng = np.random.default_rng(seed)
    scores, same = [], []
    for identity in sorted(set(ids[~forgery])):
        rows = np.flatnonzero(ids == identity)
        if len(rows) <= references:
            continue
        enrolled, own = rows[:references], rows[references:]
        forged = np.flatnonzero(forgery & (groups == group_of(identity)))
        others = np.flatnonzero(~forgery & (ids != identity) & (not forgeries_only))
        others = rng.choice(others, min(len(others), len(own) + len(forged)), replace=False) if len(others) else others
        among = 1.0 - (vectors[enrolled] @ vectors[enrolled].T)[np.triu_indices(references, k=1)]
        for rows_, label in ((own, 1), (forged, 0), (others, 0)):
            for row in rows_:
                scores.append(relative_distance(1.0 - vectors[enrolled] @ vectors[row], among))
                same.append(label)
    return np.asarray(scores), np.asarray(same, dtype=np.int8)


def enrolment_card(vectors: np.ndarray, identities: list[str], groups: int) -> dict:
    """The card's `enrolment` section: the relative threshold at the equal error rate on held-out enrolments,
    or {} when the validation identities are too few to enrol (fewer than ENROLMENT_REFERENCES + 1 images)."""
    # Skilled forgeries, when the data have them, are the negatives: the verdict has to hold against the hard case,
    # and random forgeries lie far beyond it (held-out writers: relative distance medians 3-6, genuine 1.0-1.2), so
    # they would only dilute the false-accept rate the equal-error point balances.
    scores, same = enrolment_scores(vectors, identities, forgeries_only=True)
    negatives = "skilled forgeries of the enrolled writers"
    if not (same == 0).any():
        scores, same = enrolment_scores(vectors, identities)
        negatives = "images of other identities"
    if not (same == 1).any() or not (same == 0).any():
        return {}
    calibration = calibrate(-scores, same)
    return {"enrolment": {
        "threshold": -calibration.threshold, "references": ENROLMENT_REFERENCES, "criterion": "equal error rate",
        "negatives": negatives,
        "metric": "mean cosine distance to the references over the mean distance among them",
        "eer": calibration.eer, "auc": calibration.auc, "accuracy": calibration.accuracy,
        "how": (f"equal-error-rate threshold on {len(same)} questioned images (negatives: {negatives}) against "
                f"enrolments of {ENROLMENT_REFERENCES} references, of identities from {groups} folders (writers, alphabets) "
                "never seen in training"),
    }}


def companion_card(spec: str | None, embed: Callable[[torch.Tensor], np.ndarray], train: tuple[torch.Tensor, list],
                   val: tuple[np.ndarray, list, list[str]], alone, seed: int = 0) -> tuple[dict, list[np.ndarray]]:
    """The card's `companion` section and the fused blocks' centres: the image model `spec` fused with the encoder
    (siamese.fused). Centres are block means over (at most CENTRE_IMAGES of) the training images: `train` is their
    prepared pixels for `embed` (the encoder) and their sources. Thresholds are calibrated on the fused vectors of
    the validation identities: `val` is their encoder vectors, sources and identities. ({}, []) without a companion."""
    if not spec or spec == "none":
        return {}, []
    from ..models import load_embedder

    model = load_embedder(spec)
    train_pixels, train_images = train
    pick = np.sort(np.random.default_rng(seed).permutation(len(train_images))[:CENTRE_IMAGES])
    centres = [embed(train_pixels[torch.as_tensor(pick)].float()).mean(0)]
    centres += [block.mean(0) for block in _companion_blocks(model, [train_images[k] for k in pick])]
    vectors, images, identities = val
    fused = fuse([vectors, *_companion_blocks(model, images)], centres)
    scores, same = pair_scores(fused, identities)
    calibration = calibrate(scores, same)
    groups = len({group_of(i) for i in identities})
    blocks = "its 224x512 ink's pooled and stage-5 features" if hasattr(model, "ink_texture") else "its vector of the 224 px ink"
    return {"companion": {
        "model": model.name,
        "how": f"the encoder's vector and the model's ({blocks}), each minus its mean over {len(pick)} training images: "
               "the mean of their cosine distances",
        "threshold": {"value": 1.0 - calibration.threshold, "criterion": "equal error rate",
                      "how": f"equal-error-rate threshold on {len(same)} pairs of {len(set(identities))} identities from {groups} "
                             f"folders never seen in training, with {model.name} fused"},
        "metrics": {"val_auc": roc_auc(scores, same), "val_eer": calibration.eer, "val_eer_encoder_alone": alone.eer},
        **enrolment_card(fused, identities, groups),
    }}, centres


def _companion_blocks(model, images: list) -> list[np.ndarray]:
    """companion_parts of `images`, COMPANION_BATCH at a time (each batch is one forward pass)."""
    chunks = [companion_parts(model, images[k : k + COMPANION_BATCH]) for k in range(0, len(images), COMPANION_BATCH)]
    return [np.concatenate(block) for block in zip(*chunks)]
