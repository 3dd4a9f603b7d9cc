"""Evaluation the way the app decides: pairs at the mode's own threshold, and N-way one-shot runs."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..calibration import accuracy_at, equal_error_rate, roc_auc
from ..verify import Mode, Verifier

SAME_COLUMNS = ("same_person", "same_writer", "same", "label")


def _represent_files(verifier: Verifier, paths: list[Path], mode: Mode) -> tuple[dict, dict]:
    """(path -> vector, path -> reason it could not be used); each file is processed once."""
    results = verifier.try_represent_many([str(p) for p in paths], mode, [p.name for p in paths])
    vectors, failures = {}, {}
    for path, result in zip(paths, results):
        if isinstance(result, Exception):
            failures[path] = f"{path.name}: {result}"
        else:
            vectors[path] = result.vector
    return vectors, failures


def eval_pairs(verifier: Verifier, mode: Mode | str, pairs_csv: str | Path, images_dir: str | Path) -> dict:
    """Accuracy at the threshold the app would use (never tuned on these pairs), ROC AUC and EER."""
    mode, images_dir = Mode(mode), Path(images_dir)
    with open(pairs_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{pairs_csv} holds no pairs.")
    same_column = next((c for c in SAME_COLUMNS if c in rows[0]), None)
    if same_column is None or "image_a" not in rows[0] or "image_b" not in rows[0]:
        raise ValueError(f"{pairs_csv} needs columns image_a, image_b and one of {', '.join(SAME_COLUMNS)}.")
    paths = sorted({images_dir / r[c] for r in rows for c in ("image_a", "image_b")})
    vectors, failures = _represent_files(verifier, paths, mode)
    threshold = verifier.threshold(mode)
    distances, labels, skipped = [], [], []
    for row in rows:
        a, b = images_dir / row["image_a"], images_dir / row["image_b"]
        reasons = [failures[p] for p in (a, b) if p in failures]
        if reasons:
            skipped.append({"image_a": row["image_a"], "image_b": row["image_b"], "reason": "; ".join(reasons)})
            continue
        distances.append(verifier.distance(vectors[a], vectors[b], mode))
        labels.append(int(float(row[same_column])))
    result = {
        "task": "pairs",
        "mode": mode.value,
        "model": verifier.model_name(mode),
        "metric": verifier.metric(mode),
        "threshold": threshold.value,
        "threshold_source": threshold.source,
        "pairs_scored": len(distances),
        "pairs_skipped": len(skipped),
        "skipped": skipped,
    }
    if distances:
        scores = -np.asarray(distances)  # higher = more similar
        result["accuracy"] = accuracy_at(scores, labels, -threshold.value)
        if 0 < sum(labels) < len(labels):
            result["roc_auc"] = roc_auc(scores, labels)
            result["eer"] = equal_error_rate(scores, labels)[0]
        result["same_pairs"], result["different_pairs"] = int(sum(labels)), len(labels) - int(sum(labels))
    return result


def read_oneshot_run(run_dir: Path) -> tuple[list[Path], list[Path], dict[Path, Path]]:
    """(training images, test images, test image -> its true training image) of one run folder."""
    root = run_dir.parent
    truth = {}
    for line in (run_dir / "class_labels.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            test, train = line.split()
            truth[root / test] = root / train
    training = sorted((run_dir / "training").glob("*.png"))
    return training, sorted(truth), truth


def eval_oneshot(verifier: Verifier, mode: Mode | str, runs_dir: str | Path) -> dict:
    """Mean accuracy over N-way one-shot runs: each test item goes to its nearest training image."""
    mode, runs_dir = Mode(mode), Path(runs_dir)
    runs = sorted(p for p in runs_dir.iterdir() if (p / "class_labels.txt").is_file())
    if not runs:
        raise ValueError(f"No one-shot runs in {runs_dir}: expected run01/class_labels.txt, run01/training, run01/test.")
    per_run, failures_all = [], []
    for run in runs:
        training, tests, truth = read_oneshot_run(run)
        vectors, failures = _represent_files(verifier, training + tests, mode)
        failures_all += list(failures.values())
        usable = [t for t in training if t in vectors]
        correct = 0
        for test in tests:
            if test not in vectors or not usable:
                continue  # counted as wrong, reason listed
            distances = [verifier.distance(vectors[test], vectors[t], mode) for t in usable]
            correct += usable[int(np.argmin(distances))] == truth[test]
        per_run.append(correct / len(tests))
    return {
        "task": "oneshot",
        "mode": mode.value,
        "model": verifier.model_name(mode),
        "runs": len(runs),
        "ways": len(read_oneshot_run(runs[0])[0]),
        "mean_accuracy": float(np.mean(per_run)),
        "per_run_accuracy": [round(a, 4) for a in per_run],
        "images_skipped": failures_all,
    }
