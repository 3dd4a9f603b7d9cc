"""Mutation testing of the modules whose bugs would hurt users most (docs/TESTING.md). Not run by CI.

mutmut changes one thing at a time in the code (`<=` to `<`, a constant, a dropped call) and runs the tests
that cover it; a mutant the tests still pass on ("survived") is a behaviour nothing pins. mutmut is a dev tool,
not a test dependency: install it beside the project, not into the app's requirements:

    pip install --target ~/.cache/twinsight-mutmut mutmut==3.8.1
    PYTHONPATH=~/.cache/twinsight-mutmut nice -n 15 .venv/bin/python benchmarks/mutation.py verify calibration

(or `pip install mutmut==3.8.1` into a dev venv and drop the PYTHONPATH). Each target runs in its own scratch
copy of the repository (mutmut works in the current directory and writes `mutants/` there), with a setup.cfg
written by this script, so the repository gets no mutmut config or files. The survivors' diffs are printed;
`--keep` leaves the scratch directory for `python -m mutmut show NAME` / `browse` inside it.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    files: tuple[str, ...]  # mutated
    tests: tuple[str, ...]  # the test files run against each mutant (only those covering the mutated function run)
    functions: tuple[str, ...] = ("*",)  # mutmut name patterns, e.g. "indexer.index.xǁGalleryIndexǁadd*"


TARGETS = {
    # The verdict and the distance it decides on, against the model-free verdict tests (test_verify.py checks the
    # same rules through a model, which makes each mutant ~15 s).
    "verify": Target(("indexer/verify.py",), ("tests/test_verdict.py",),
                     tuple(f"indexer.verify.xǁVerifierǁ{name}__mutmut_*" for name in ("_verdict", "_distances", "distance"))),
    "calibration": Target(("indexer/calibration.py",), ("tests/test_calibration.py", "tests/test_calibration_properties.py")),
    "journal": Target(("indexer/index/journal.py",), ("tests/test_journal.py", "tests/test_journal_properties.py")),
    # The hnswlib store's add / delete / save themselves, against the journal tests (which add, delete, save,
    # commit and reload in every combination); test_index.py's model-backed tests make each mutant too slow to run.
    "index": Target(("indexer/index/hnsw.py", "indexer/index/table.py"),
                    ("tests/test_journal.py", "tests/test_journal_properties.py"),
                    tuple(f"indexer.index.hnsw.xǁHnswStoreǁ{name}__mutmut_*" for name in
                          ("add_vectors", "delete", "_remove", "save"))
                    + ("indexer.index.table.xǁItemTableǁremove__mutmut_*",)),
    "demo": Target(("demo/gallery.py", "demo/pairwise.py", "demo/classification.py"),
                   ("tests/test_reliability_inputs.py", "tests/test_demo_callbacks.py"),
                   tuple(f"demo.{name}__mutmut_*" for name in
                         ("gallery.x_search", "gallery.x_similar", "gallery.x_add_images", "gallery.x__filter",
                          "pairwise.x_enrol_and_compare", "pairwise.x_compare", "classification.x_classify",
                          "classification.x_parse_labels"))),
}
COPY = ("indexer", "demo", "tests", "benchmarks", "assets", "app.py", "README.md", "requirements.txt")


def _config(target: Target) -> str:
    lines = ["[mutmut]", "source_paths =", "    indexer", "    demo", "only_mutate ="]
    lines += [f"    {file}" for file in target.files]
    lines += ["pytest_add_cli_args_test_selection ="] + [f"    {test}" for test in target.tests]
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider", "    -x", "    -q"]
    lines += ["also_copy =", "    assets", "    app.py", "    README.md", "    benchmarks"]
    # mutmut's CPU-time limit counts only the tests' own time, not their fixtures' (a model load): allow for it.
    lines += ["timeout_constant = 20"]
    # Workers fork from a server that only collected the tests: the stats run leaves model threads behind in
    # mutmut's own process, and a fork of it waits for them forever.
    lines += ["process_isolation = forkserver"]
    return "\n".join(lines) + "\n"


def _scratch(name: str, target: Target, base: Path) -> Path:
    where = base / name
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for item in COPY:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, where / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.is_file():
            shutil.copy2(source, where / item)
    (where / "setup.cfg").write_text(_config(target))
    return where


def _mutmut(where: Path, *args: str, check: bool = True) -> str:
    # One torch thread per mutant: the runs go side by side (--children) and CPU limits stay meaningful.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=where, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if check and done.returncode != 0:
        raise SystemExit(f"mutmut {' '.join(args)} failed in {where}:\n{done.stdout[-4000:]}")
    return done.stdout


def run(name: str, target: Target, base: Path, children: int) -> Counter:
    where = _scratch(name, target, base)
    print(f"== {name}: {', '.join(target.files)} against {', '.join(target.tests)} (in {where})", flush=True)
    _mutmut(where, "run", "--max-children", str(children), *target.functions)
    statuses = Counter()
    survivors = []
    for line in _mutmut(where, "results", "--all", "true").splitlines():
        match = re.match(r"\s*(\S+): (.+)$", line)
        if match and "__mutmut_" in match.group(1):
            status = match.group(2).strip()
            if target.functions != ("*",) and not any(_matches(match.group(1), f) for f in target.functions):
                continue
            statuses[status] += 1
            if status == "survived":
                survivors.append(match.group(1))
    tested = sum(n for status, n in statuses.items() if status != "skipped")
    killed = statuses["killed"] + statuses.get("timeout", 0)
    print(f"   {dict(statuses)}; score {killed}/{tested} = {killed / max(tested, 1):.1%}", flush=True)
    for survivor in survivors:
        shown = _mutmut(where, "show", survivor, check=False).splitlines()
        changed = [line for line in shown if line[:1] in "+-" and line[:3] not in ("---", "+++")]
        print(f"   survived {survivor}:\n" + "\n".join(f"      {line}" for line in changed), flush=True)
    return statuses


def _matches(name: str, pattern: str) -> bool:
    from fnmatch import fnmatch

    return fnmatch(name, pattern)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", default=list(TARGETS), choices=list(TARGETS) + [[]])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "twinsight-mutation")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies (for mutmut show/browse)")
    args = parser.parse_args(argv)
    try:
        import mutmut  # noqa: F401
    except ImportError:
        raise SystemExit("mutmut is not installed: see this script's docstring.") from None
    for name in args.targets or list(TARGETS):
        run(name, TARGETS[name], args.workdir, args.children)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
