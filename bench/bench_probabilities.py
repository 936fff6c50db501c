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

import warnings

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from bench.metric_ratio import arguments, compare
from services.scorer.builtin.probabilities import Scores, probability_metrics


def make(rows: int, classes: int, seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    raw = rng.random((rows, classes))
    raw[np.arange(rows), y] += rng.random(rows) * 1.5
    proba = np.round(raw / raw.sum(axis=1, keepdims=True), 3) + 1e-3
    proba /= proba.sum(axis=1, keepdims=True)
    return Scores([f"class_{i}" for i in range(classes)], y, proba)


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
            labels, proba[:, 1], pos_label=data.classes[1]
        )
        return values
    values["roc_auc"] = roc_auc_score(labels, proba, multi_class="ovr")
    values["average_precision"] = average_precision_score(labels, proba)
    values["roc_auc_weighted"] = roc_auc_score(labels, proba, multi_class="ovr", average="weighted")
    values["average_precision_weighted"] = average_precision_score(
        labels, proba, average="weighted"
    )
    return values


def main() -> None:
    args = arguments(__doc__, 2_000_000, classes=5)
    for classes in (2, args.classes):
        data = make(args.rows, classes, args.seed)
        compare(
            f"{args.rows:,} rows x {classes} classes",
            lambda: ours(data),  # noqa: B023
            lambda: sklearn(data),  # noqa: B023
            args.repeat,
        )


if __name__ == "__main__":
    main()
