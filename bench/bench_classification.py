"""Benchmark the classification metrics against scikit-learn on the same arrays.

Run ``python -m bench.bench_classification`` (10M rows x 1,000 classes) or ``--rows 1000000``.
Seeded: true labels are long-tailed over ``--classes`` classes, 70% of predictions are right, the
rest uniform. Two paths are timed, and both must give values identical (``==``) to sklearn:

* ``int codes``: our counting core (``count`` + ``f1_metrics`` + ``accuracy_metrics``) on dense
  integer codes, which is what the scorer holds after encoding, vs sklearn's ``f1_score(average=
  "macro")`` + ``accuracy_score`` on the same int64 arrays (sklearn still discovers the labels).
* ``strings``: what a user of sklearn usually hits (labels as Python strings in an object array,
  e.g. a pandas column) vs our encoding of the same labels held as a pyarrow string array (as the
  CSV reader produces them) plus the same metrics. CSV reading is not timed here (see
  ``bench_score_e2e``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from sklearn.metrics import accuracy_score, f1_score

from services.scorer.builtin.classification import (
    Counts,
    accuracy_metrics,
    count,
    encode,
    f1_metrics,
)
from services.scorer.builtin.tabular import Column, Pair


@dataclass(frozen=True)
class Row:
    path: str
    ours_s: float
    sklearn_s: float
    identical: bool


def make_codes(rows: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, classes + 1) ** 0.8
    y_true = rng.choice(classes, size=rows, p=weights / weights.sum())
    wrong = rng.random(rows) >= 0.7
    y_pred = np.where(wrong, rng.integers(0, classes, rows), y_true)
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def ours_from_codes(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> tuple[float, float]:
    counts: Counts = count(y_true, y_pred, classes)
    labels = [str(i) for i in range(classes)]
    f1 = f1_metrics(labels, counts)["f1_macro"]
    accuracy = accuracy_metrics(labels, counts, len(y_true))["accuracy"]
    return float(f1), float(accuracy)  # type: ignore[arg-type]


def ours_from_strings(gt: pa.ChunkedArray, pred: pa.ChunkedArray) -> tuple[float, float]:
    ids = pa.chunked_array([], type=pa.string())
    pair = Pair(Column(ids, gt, ("id", "label")), Column(ids, pred, ("id", "label")), None)
    encoded = encode(pair)
    return ours_from_codes(encoded.y_true, encoded.y_pred, len(encoded.labels))


def sklearn_metrics(y_true: Any, y_pred: Any) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning if a class is never predicted
        f1 = f1_score(y_true, y_pred, average="macro")
        return float(f1), float(accuracy_score(y_true, y_pred))


def compare(
    path: str, ours: Callable[[], tuple[float, float]], theirs: Callable[[], tuple[float, float]]
) -> Row:
    our_values, ours_s = timed(ours)
    their_values, sklearn_s = timed(theirs)
    print(
        f"  {path}: ours f1={our_values[0]!r} acc={our_values[1]!r}; "
        f"sklearn f1={their_values[0]!r} acc={their_values[1]!r}"
    )
    return Row(path, ours_s, sklearn_s, our_values == their_values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-strings", action="store_true", help="time the int-code path only")
    args = parser.parse_args()

    y_true, y_pred = make_codes(args.rows, args.classes, args.seed)
    print(f"{args.rows:,} rows x {args.classes:,} classes, seed {args.seed}")
    rows = [
        compare(
            "int codes",
            lambda: ours_from_codes(y_true, y_pred, args.classes),
            lambda: sklearn_metrics(y_true, y_pred),
        )
    ]
    if not args.skip_strings:
        names = np.array([f"class_{i:04d}" for i in range(args.classes)], dtype=object)
        true_obj, pred_obj = names[y_true], names[y_pred]
        gt = pa.chunked_array([pa.array(true_obj, type=pa.string())])
        pred = pa.chunked_array([pa.array(pred_obj, type=pa.string())])
        rows.append(
            compare(
                "strings",
                lambda: ours_from_strings(gt, pred),
                lambda: sklearn_metrics(true_obj, pred_obj),
            )
        )

    print(f"\n{'path':<10} {'ours s':>9} {'sklearn s':>10} {'ratio':>7}  identical")
    for row in rows:
        ratio = row.ours_s / row.sklearn_s
        print(
            f"{row.path:<10} {row.ours_s:>9.3f} {row.sklearn_s:>10.3f} {ratio:>7.4f}  "
            f"{row.identical}"
        )
    if not all(row.identical for row in rows):
        raise SystemExit("values differ from scikit-learn")


if __name__ == "__main__":
    main()
