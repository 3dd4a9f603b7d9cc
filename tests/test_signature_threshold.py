"""benchmarks/signature_encoder.py's cross-fitted enrolment threshold: each fold is scored at the mean of the OTHER
folds' held-out equal-error points, and --write-card puts the mean of all the points on an encoder's card (the
shipped signature encoder's threshold comes from it), keeping the trainer's validation figures beside it."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from signature_encoder import FUSED, RELATIVE, cross_fitted, write_fit  # noqa: E402

from indexer.calibration import equal_error_rate  # noqa: E402


def fold(k: int, genuine, skilled, random_):
    distances = list(genuine) + list(skilled) + list(random_)
    kinds = ["genuine"] * len(genuine) + ["skilled"] * len(skilled) + ["random"] * len(random_)
    point = -equal_error_rate(-np.asarray(distances[:len(genuine) + len(skilled)]),
                              [1] * len(genuine) + [0] * len(skilled))[1]
    return {"fold": k, "model": FUSED, f"{RELATIVE}/skilled": {"eer_distance": point},
            "relative scores": {"distances": distances, "kinds": kinds}}


def test_each_fold_is_scored_at_the_other_folds_point():
    results = [fold(0, [1.0, 1.1], [1.3, 1.4], [3.0]), fold(1, [1.2, 1.4], [1.6, 1.7], [3.0]),
               fold(2, [1.2, 1.4], [1.6, 1.7], [1.3]), {"fold": 0, "model": "another model"}]
    fit = cross_fitted(results, FUSED)
    assert fit["points"] == pytest.approx([1.2, 1.5, 1.5])  # each fold's own equal-error point
    assert fit["threshold"] == pytest.approx(1.4)
    # fold 0 at 1.5 (not its own 1.2, which would separate it): both forgeries pass, the random one does not
    assert fit["accuracy"]["skilled"][0] == pytest.approx(2 / 4) and fit["accuracy"]["random"][0] == 1.0
    # folds 1 and 2 at 1.35: the genuine 1.4 is refused; fold 2's random forgery at 1.3 is let in
    assert fit["accuracy"]["skilled"][1:] == pytest.approx([3 / 4, 3 / 4])
    assert fit["accuracy"]["random"][1:] == pytest.approx([2 / 3, 1 / 3])
    assert cross_fitted(results[:1], FUSED) is None  # one fold has no others to learn from


def test_write_card_sets_the_threshold_and_keeps_the_validation_figures(tmp_path):
    card = {"enrolment": {"threshold": 1.0},
            "companion": {"enrolment": {"threshold": 1.9, "eer": 0.1, "auc": 0.9, "accuracy": 0.8, "how": "3 writers",
                                        "references": 5}}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    fit = {"threshold": 1.55, "points": [1.5, 1.6], "accuracy": {"skilled": [0.9, 0.8], "random": [1.0, 0.9]}}
    write_fit(tmp_path, fit, "python benchmarks/signature_encoder.py ...")
    write_fit(tmp_path, fit, "python benchmarks/signature_encoder.py ...")  # twice: the validation figures stay
    written = json.loads((tmp_path / "card.json").read_text())
    section = written["companion"]["enrolment"]
    assert section["threshold"] == 1.55 and section["references"] == 5 and "signature_encoder.py" in section["command"]
    assert section["validation"] == {"threshold": 1.9, "eer": 0.1, "auc": 0.9, "accuracy": 0.8, "how": "3 writers"}
    assert "1.500, 1.600" in section["how"] and "85.0%" in section["how"]
    assert written["enrolment"] == {"threshold": 1.0}  # the encoder alone keeps its own: only the fused one moved
