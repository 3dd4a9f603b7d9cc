"""Face mode's jitter setting on labelled pairs: the margin around dlib's 0.6 per setting.

    .venv/bin/python benchmarks/face_jitter.py [--pairs ../shared/data/faces-dev/pairs.csv] [--jitters 1 2 4 6 10]
        [--dlib 10] [--show-pairs]

Each image is detected once (FaceModel in this process); each setting then describes the same chips with that many
CNN passes (TWINSIGHT_FACE_JITTERS: the chip, its mirror image, seeded jitters). Prints, per setting, the largest
same-person distance, the smallest different-person distance, accuracy at 0.6, the CPU ms per face the setting
adds to a single pass (this process's CPU time: steadier than wall time on a shared machine), and how far the
pair distances lie from those of the most-jittered setting (the least noisy estimate here). `--dlib N` adds dlib's
own num_jitters=N for reference (random: it differs run to run). `--show-pairs` prints every pair's distance.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.face import DLIB_THRESHOLD, FaceModel, face_distance  # noqa: E402
from indexer.face_net import MODEL_FILE  # noqa: E402
from indexer.face_worker import models_dir  # noqa: E402

DEV_PAIRS = ROOT.parent / "shared" / "data" / "faces-dev" / "pairs.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=DEV_PAIRS, help="CSV with image_a, image_b, same_person")
    parser.add_argument("--images", type=Path, help="folder of the CSV's file names (default: the CSV's folder)")
    parser.add_argument("--jitters", type=int, nargs="+", default=[1, 2, 3, 4, 6, 10])
    parser.add_argument("--dlib", type=int, nargs="*", default=[10], help="dlib's own num_jitters, for reference")
    parser.add_argument("--show-pairs", action="store_true")
    args = parser.parse_args()
    folder = args.images or args.pairs.parent
    with open(args.pairs, newline="") as handle:
        pairs = [(row["image_a"], row["image_b"], row["same_person"].strip() in ("1", "true", "True"))
                 for row in csv.DictReader(handle)]
    model = FaceModel(in_process=True, jitters=1)
    faces = {name: model.one_face(folder / name, on_multiple="largest")[0]
             for name in sorted({name for a, b, _ in pairs for name in (a, b)})}
    settings = {f"jitters {n}": describer(model, n) for n in args.jitters}
    import dlib

    encoder = dlib.face_recognition_model_v1(str(models_dir() / MODEL_FILE))  # dlib's own CNN, for its num_jitters
    for n in args.dlib:
        settings[f"dlib num_jitters {n}"] = lambda face, n=n: np.asarray(
            encoder.compute_face_descriptor(np.asarray(face.chip), n), np.float32)
    distances, cost = {}, {}
    for label, describe in settings.items():
        start = time.process_time()
        descriptors = {name: describe(face) for name, face in faces.items()}
        cost[label] = (time.process_time() - start) * 1000 / len(faces)
        distances[label] = np.array([face_distance(descriptors[a], descriptors[b]) for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])
    reference = distances[f"jitters {max(args.jitters)}"]
    print(f"{len(pairs)} pairs ({same.sum()} same), {len(faces)} images; reference: jitters {max(args.jitters)}")
    print("| setting | max same | min different | accuracy at 0.6 | added CPU ms per face | mean (max) |d - d_ref| |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, d in distances.items():
        accuracy = np.mean((d < DLIB_THRESHOLD) == same)
        gap = np.abs(d - reference)
        print(f"| {label} | {d[same].max():.3f} | {d[~same].min():.3f} | {accuracy:.1%} | {cost[label]:.0f} "
              f"| {gap.mean():.3f} ({gap.max():.3f}) |")
    if args.show_pairs:
        print("image_a,image_b,same_person," + ",".join(distances))
        for i in np.argsort(distances["jitters 1"] if "jitters 1" in distances else reference):
            a, b, s = pairs[i]
            print(f"{a},{b},{int(s)}," + ",".join(f"{d[i]:.3f}" for d in distances.values()))


def describer(model: FaceModel, jitters: int):
    def describe(face):
        model.jitters = jitters
        return model.describe(face).descriptor
    return describe


if __name__ == "__main__":
    main()
