"""Mutation testing of the modules whose bugs would hurt users most (docs/TESTING.md). Not run by CI.

mutmut changes one thing at a time in the code (`<=` to `<`, a constant, a dropped call) and runs the tests
that cover it; a mutant the tests still pass on ("survived") is a behaviour nothing pins. mutmut is a dev tool,
not a test dependency: install it beside the project, not into the app's requirements:

    pip install --target ~/.cache/twinsight-mutmut mutmut==3.8.1
    PYTHONPATH=~/.cache/twinsight-mutmut nice -n 15 .venv/bin/python benchmarks/mutation.py verify calibration

(or `pip install mutmut==3.8.1` into a dev venv and drop the PYTHONPATH). Each target runs in its own scratch
copy of the repository (mutmut works in the current directory and writes `mutants/` there), with a setup.cfg
written by this script, so the repository gets no mutmut config or files. The survivors' diffs are printed;
`--keep` leaves the scratch directory for `python -m mutmut show NAME` / `browse` inside it; `--only NAME...`
reruns those mutants of one target (the survivors, after adding tests).
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
from dataclasses import dataclass, replace
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
    # The hnswlib store's add / delete / save / load and the item table's columns, against the model-free tests that
    # add, delete, save, commit, reload and damage an index (test_index.py's and the conformance suite's
    # model-backed tests make each mutant too slow to run).
    "index": Target(("indexer/index/hnsw.py", "indexer/index/table.py", "indexer/index/hnsw_files.py"),
                    ("tests/test_journal.py", "tests/test_journal_properties.py", "tests/test_hnsw_store.py")
                    + tuple(f"tests/test_index.py::test_{name}" for name in (
                        "image_never_opens_paths_outside_the_index", "capacity_grows_on_demand",
                        "model_or_dimension_mismatch_is_refused", "crash_mid_save_leaves_previous_index_loadable",
                        "ef_is_reapplied_after_load", "exact_search_stays_exact_with_the_float16_scan_copy",
                        "concurrent_search_while_adding"))
                    + tuple(f"tests/test_store_conformance.py::test_{name}" for name in (
                        "add_get_and_search_finds_each_item_first[hnsw]", "delete[hnsw]",
                        "label_filter_finds_rare_labels[hnsw]", "reload_keeps_items_and_records_the_store[hnsw]",
                        "concurrent_search_and_add[hnsw]", "opening_with_another_model_or_dimension_is_refused[hnsw-both]"))
                    + tuple(f"tests/test_reliability_inputs.py::test_damaged_index_{name}" for name in (
                        "directory_is_a_clear_index_format_error", "without_checksum_verification_is_still_a_clear_error")),
                    tuple(f"indexer.index.hnsw.xǁHnswStoreǁ{name}__mutmut_*" for name in
                          ("add_vectors", "_insert", "delete", "_remove", "save", "load"))
                    + tuple(f"indexer.index.table.xǁItemTableǁ{name}__mutmut_*" for name in ("reserve", "append", "remove"))
                    + tuple(f"indexer.index.hnsw_files.xǁHnswFilesǁ{name}__mutmut_*" for name in ("save", "_save", "_write_state"))
                    + ("indexer.index.hnsw_files.x_load_hnsw__mutmut_*",)),
    # The item table and the memory-mapped scan copy (docs/BENCHMARKS.md, 10): every column's append, swap-remove,
    # save and load, against the model-free tests that compare a mapped index with one that never touched a file.
    "table": Target(("indexer/index/table.py", "indexer/index/scan_copy.py"),
                    ("tests/test_scan_copy.py", "tests/test_hnsw_store.py", "tests/test_journal.py",
                     "tests/test_journal_properties.py"),
                    tuple(f"indexer.index.table.xǁ{cls}ǁ{name}__mutmut_*" for cls, names in (
                        ("Positions", ("__contains__", "__getitem__", "of", "set", "pop")),
                        ("ItemTable", ("pos", "row", "label", "added", "item", "hit", "columns", "distinct_labels",
                                       "filter_positions", "_code", "reserve", "append", "remove", "load", "arrow")))
                          for name in names)
                    + ("indexer.index.table.x__grown__mutmut_*", "indexer.index.scan_copy.xǁScanCopyǁ*")),
    # The input bounds of the tabs: the checks outside the callbacks (mutmut leaves decorated functions, the
    # callbacks, alone), against the bound tests on the tiny CLIP model (the corpus test and the effnet-backed
    # callback tests make each mutant minutes long).
    "demo": Target(("demo/gallery.py", "demo/classification.py", "demo/runtime.py"),
                   tuple(f"tests/test_reliability_inputs.py::test_{name}" for name in (
                       "text_and_count_inputs_are_bounded", "inputs_at_their_limits_are_accepted",
                       "shapes_only_api_callers_send_are_read_as_meant"))
                   + tuple(f"tests/test_demo_callbacks.py::test_{name}" for name in (
                       "bad_zero_shot_labels_are_friendly_errors", "gallery_bad_inputs_are_friendly",
                       "zero_shot_labels_are_split_on_commas_and_new_lines_and_kept_once_in_order")),
                   ("demo.gallery.x__filter__mutmut_*", "demo.gallery.x__read_uploads__mutmut_*",
                    "demo.classification.x_parse_labels__mutmut_*", "demo.runtime.x_bounded_int__mutmut_*")),
}
COPY = ("indexer", "demo", "tests", "benchmarks", "assets", "app.py", "README.md", "requirements.txt")


# Appended to the scratch copy's tests/conftest.py. mutmut runs the tests in its `mutants/` directory, so a mutant
# that writes to the working directory (a save() that falls back to ".") would replace mutmut's own files; each test
# runs in an empty directory of its own instead.
CWD_GUARD = """

@pytest.fixture(autouse=True)
def _mutation_scratch_cwd(tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
"""


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
    with open(where / "tests" / "conftest.py", "a") as conftest:
        conftest.write(CWD_GUARD)
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
    parser.add_argument("--children", type=int, default=1, help="mutants tested at once (each is CPU-bound)")
    parser.add_argument("--only", nargs="+", metavar="MUTANT", help="of one target, only these mutants (names or "
                        "patterns, as printed): rerun the survivors after adding tests")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies (for mutmut show/browse)")
    args = parser.parse_args(argv)
    try:
        import mutmut  # noqa: F401
    except ImportError:
        raise SystemExit("mutmut is not installed: see this script's docstring.") from None
    targets = args.targets or list(TARGETS)
    if args.only and len(targets) != 1:
        parser.error("--only needs exactly one target")
    for name in targets:
        target = replace(TARGETS[name], functions=tuple(args.only)) if args.only else TARGETS[name]
        run(name, target, args.workdir, args.children)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
