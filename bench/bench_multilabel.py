"""Benchmark the multilabel metrics against scikit-learn on the same label sets.

Run ``python -m bench.bench_multilabel`` (1M rows x 100 labels, ~5 per row) or ``--rows 100000``.
Ours: from the (row, label) codes the scorer holds after reading (key building, overlap, counts,
``multilabel_metrics``); scikit-learn: ``precision_recall_fscore_support`` for micro, macro,
weighted and samples averages, ``hamming_loss`` and ``accuracy_score`` on the dense indicator
matrices of the same sets. Values must be identical. CSV reading and binarizing are not timed.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, hamming_loss, precision_recall_fscore_support

from bench.metric_ratio import arguments, compare
from services.scorer.builtin.multilabel import keys_of, multilabel_metrics
from shared.models import MetricValue

AVERAGES = ("micro", "macro", "weighted", "samples")


def main() -> None:
    args = arguments(__doc__, 1_000_000, labels=100)
    rng = np.random.default_rng(args.seed)
    n, width = args.rows, args.labels
    truth = rng.random((n, width)) < 0.05
    predicted = truth ^ (rng.random((n, width)) < 0.02)
    true_rows, true_codes = np.nonzero(truth)
    pred_rows, pred_codes = np.nonzero(predicted)
    names = [f"tag{i:03d}" for i in range(width)]

    def ours() -> list[MetricValue]:
        keys = keys_of(true_rows, true_codes, pred_rows, pred_codes, n_rows=n, n_labels=width)
        metrics = multilabel_metrics(names, keys)
        return [metrics[f"f1_{a}"] for a in AVERAGES] + [
            metrics["hamming_loss"],
            metrics["subset_accuracy"],
        ]

    def theirs() -> list[float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f1 = [precision_recall_fscore_support(truth, predicted, average=a)[2] for a in AVERAGES]
        return [*f1, hamming_loss(truth, predicted), accuracy_score(truth, predicted)]

    compare(f"{n:,} rows x {width} labels", ours, theirs, args.repeat)


if __name__ == "__main__":
    main()
