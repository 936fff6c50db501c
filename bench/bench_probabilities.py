"""Benchmark the probability metrics against scikit-learn on the same arrays.

Run ``python -m bench.bench_probabilities`` (2M rows x 5 classes, and a binary set) or
``--rows 200000``. Seeded: each row's true class gets a boosted score, probabilities are rounded to
3 decimals (ties, as CSV files have them) and renormalised. Ours: ``probability_metrics`` (ROC AUC
one-vs-rest macro and weighted, average precision macro and weighted, log loss, Brier score) on the
arrays the scorer holds after reading; scikit-learn: ``roc_auc_score`` (macro, weighted),
``average_precision_score`` (macro, weighted), ``log_loss``, ``brier_score_loss`` on the same
arrays with string labels. Values must be identical (``==``). CSV reading is not timed.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from services.scorer.builtin.probabilities import Scores, probability_metrics


def make(rows: int, classes: int, seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    raw = rng.random((rows, classes))
    raw[np.arange(rows), y] += rng.random(rows) * 1.5
    proba = np.round(raw / raw.sum(axis=1, keepdims=True), 3) + 1e-3
    proba /= proba.sum(axis=1, keepdims=True)
    return Scores([f"class_{i}" for i in range(classes)], y, proba)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def ours(data: Scores) -> dict[str, float]:
    metrics = probability_metrics(data)
    keys = ["log_loss", "brier_score", "roc_auc", "average_precision"]
    if len(data.classes) > 2:
        keys += ["roc_auc_weighted", "average_precision_weighted"]
    return {key: metrics[key] for key in keys}  # type: ignore[misc]


def sklearn(data: Scores) -> dict[str, float]:
    labels = np.asarray(data.classes)[data.y_true]
    proba = data.scores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = {
            "log_loss": log_loss(labels, proba, labels=data.classes),
            "brier_score": brier_score_loss(labels, proba, labels=data.classes),
        }
    if len(data.classes) == 2:
        values["roc_auc"] = roc_auc_score(labels, proba[:, 1])
        values["average_precision"] = average_precision_score(
            labels, proba[:, 1], pos_label=data.classes[1])
        return values
    values["roc_auc"] = roc_auc_score(labels, proba, multi_class="ovr")
    values["average_precision"] = average_precision_score(labels, proba)
    values["roc_auc_weighted"] = roc_auc_score(labels, proba, multi_class="ovr",
                                               average="weighted")
    values["average_precision_weighted"] = average_precision_score(labels, proba,
                                                                   average="weighted")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'set':<22} {'ours s':>8} {'sklearn s':>10} {'ratio':>7}  identical")
    failed = False
    for classes in (2, args.classes):
        data = make(args.rows, classes, args.seed)
        our_values, ours_s = timed(lambda: ours(data))  # noqa: B023
        their_values, sklearn_s = timed(lambda: sklearn(data))  # noqa: B023
        same = our_values == their_values
        failed |= not same
        name = f"{args.rows:,} x {classes} classes"
        print(f"{name:<22} {ours_s:>8.3f} {sklearn_s:>10.3f} {ours_s / sklearn_s:>7.4f}  {same}")
        if not same:
            print("  ours   ", our_values, "\n  sklearn", their_values)
    if failed:
        raise SystemExit("values differ from scikit-learn")


if __name__ == "__main__":
    main()
