"""End-to-end: score a 10M-row classification CSV pair in a fresh process, next to a plain read.

Run ``python -m bench.bench_score_e2e`` (10M rows, ~1,000 classes) or ``--rows 1000000``. The data
is seeded and written once into ``bench/.data/`` (gitignored): ``gt.csv`` and two predictions,
one listing the ids in the ground truth's order (``same``: no id hashing needed) and one shuffled
(``shuffled``: ids matched through a lookup); ``--ids`` picks the kind of ids. Each case runs

* ``autoscorer score <ws> --scorer classification_f1`` as a subprocess (``--mode python`` calls the
  scorer in a ``python -c`` subprocess instead, e.g. when the CLI is not installed), and
* a subprocess that merely reads both files with the same reader (``pyarrow.csv``, all columns
  strings),

measuring wall seconds and the peak RSS of each child (``os.wait4``), and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

DATA = Path(__file__).resolve().parent / ".data"
CLI = Path(sys.executable).with_name("autoscorer")

READ_ONLY = """
import sys, pyarrow as pa, pyarrow.csv as c
for path in sys.argv[1:]:
    t = c.read_csv(path, read_options=c.ReadOptions(use_threads=True),
                   convert_options=c.ConvertOptions(
                       column_types={"id": pa.string(), "label": pa.string()},
                       strings_can_be_null=False, quoted_strings_can_be_null=False))
    print(path, t.num_rows)
"""

SCORE_IN_PYTHON = """
import sys
from services.scorer.builtin.classification import classification_f1
from shared.workspace import Workspace
print(classification_f1.score(Workspace.at(sys.argv[1]), {}).summary)
"""


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # user + system: steadier than wall time on a shared machine
    peak_rss_mib: float


def write_csv(path: Path, ids: pa.Array, labels: pa.Array) -> None:
    with path.open("wb") as handle:
        handle.write(b"id,label\n")
        table = pa.table({"id": ids, "label": labels})
        pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False))


def make_ids(rows: int, kind: str) -> pa.Array:
    """``prefixed``: id0, id1, ... (not in string order, so hashed); ``padded``: id00000000, ...
    (strictly increasing as strings: distinct without hashing); ``int``: 0, 1, ... (aligned with
    NumPy, no string hashing at all)."""
    numbers = pa.array(np.arange(rows)).cast(pa.string())
    if kind == "int":
        return numbers
    if kind == "padded":
        numbers = pc.utf8_lpad(numbers, width=len(str(rows)), padding="0")
    return pc.binary_join_element_wise("id", numbers, "")


def make_data(rows: int, classes: int, seed: int, id_kind: str) -> Path:
    """Write gt.csv and the two predictions once; return the folder holding both workspaces."""
    root = DATA / f"e2e-{rows}-{classes}-{seed}{'' if id_kind == 'prefixed' else '-' + id_kind}"
    done = root / "done"
    if done.is_file():
        return root
    rng = np.random.default_rng(seed)
    ids = make_ids(rows, id_kind)
    names = pa.array([f"class_{i:04d}" for i in range(classes)])
    y_true = rng.integers(0, classes, rows)
    y_pred = np.where(rng.random(rows) < 0.7, y_true, rng.integers(0, classes, rows))
    labels_true = pa.DictionaryArray.from_arrays(pa.array(y_true), names).cast(pa.string())
    labels_pred = pa.DictionaryArray.from_arrays(pa.array(y_pred), names).cast(pa.string())
    for case in ("same", "shuffled"):
        (root / case / "input").mkdir(parents=True, exist_ok=True)
        (root / case / "output").mkdir(parents=True, exist_ok=True)
    write_csv(root / "same" / "input" / "gt.csv", ids, labels_true)
    os.link(root / "same" / "input" / "gt.csv", root / "shuffled" / "input" / "gt.csv")
    write_csv(root / "same" / "output" / "pred.csv", ids, labels_pred)
    order = pa.array(rng.permutation(rows))
    write_csv(root / "shuffled" / "output" / "pred.csv", ids.take(order), labels_pred.take(order))
    done.write_text("ok\n")
    return root


def measure(command: list[str]) -> Run:
    """Wall time and peak RSS of one child process; fails loudly if it fails."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = child.stdout.read() if child.stdout else b""
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({child.returncode}):\n{output.decode()[-2000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)  # maxrss in KiB


def best_of(repeat: int, command: list[str], before: Path | None = None) -> Run:
    """The fastest wall and CPU time and the largest peak RSS over ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        if before is not None:
            before.unlink(missing_ok=True)
        runs.append(measure(command))
    return Run(
        min(r.wall_s for r in runs), min(r.cpu_s for r in runs), max(r.peak_rss_mib for r in runs)
    )


def score_command(mode: str, workspace: Path) -> list[str]:
    if mode == "cli":
        return [str(CLI), "score", str(workspace), "--scorer", "classification_f1"]
    return [sys.executable, "-c", SCORE_IN_PYTHON, str(workspace)]


def scorer_timing(workspace: Path) -> str:
    result = workspace / "output" / "result.json"
    if not result.is_file():
        return ""
    timing = json.loads(result.read_text()).get("timing", {})
    return ", ".join(f"{key}={value:.2f}" for key, value in timing.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=("cli", "python"), default="cli")
    parser.add_argument(
        "--ids",
        choices=("prefixed", "padded", "int"),
        default="prefixed",
        help="id0, id1, ... / id00000000, ... / 0, 1, ... (see make_ids)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--cases", nargs="+", choices=("same", "shuffled"), default=["same", "shuffled"]
    )
    args = parser.parse_args()
    mode = args.mode
    if mode == "cli" and not CLI.is_file():
        print(f"{CLI} not found: scoring in a python -c subprocess instead")
        mode = "python"

    if args.prepare_only:
        make_data(args.rows, args.classes, args.seed, args.ids)
        return
    # the data is made in a child so that this process stays small: a child's peak RSS can
    # include what its parent held when it was forked
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.bench_score_e2e", "--prepare-only", *sys.argv[1:]], check=True
    )
    root = make_data(args.rows, args.classes, args.seed, args.ids)  # already there
    print(f"data in {root} ({time.perf_counter() - started:.1f}s to prepare)")
    header = (
        f"{'case':<9} {'rows':>11} {'score s':>8} {'cpu s':>6} {'MiB':>6} "
        f"{'read s':>7} {'cpu s':>6} {'MiB':>6} {'wall ratio':>10} {'cpu ratio':>9}"
    )
    lines = []
    for case in args.cases:
        workspace = root / case
        files = [str(workspace / "input" / "gt.csv"), str(workspace / "output" / "pred.csv")]
        score = best_of(
            args.repeat, score_command(mode, workspace), before=workspace / "output" / "result.json"
        )
        read = best_of(args.repeat, [sys.executable, "-c", READ_ONLY, *files])
        lines.append(
            f"{case:<9} {args.rows:>11,} {score.wall_s:>8.2f} {score.cpu_s:>6.2f} "
            f"{score.peak_rss_mib:>6.0f} {read.wall_s:>7.2f} {read.cpu_s:>6.2f} "
            f"{read.peak_rss_mib:>6.0f} {score.wall_s / read.wall_s:>10.2f} "
            f"{score.cpu_s / read.cpu_s:>9.2f}"
        )
        print(f"  {case}: scorer's own timing: {scorer_timing(workspace) or 'n/a'}")
    print(
        f"\nmode={mode}; per child process, best of {args.repeat}: wall seconds, CPU seconds "
        "(user+system), peak RSS\n"
    )
    print(header)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
