"""Benchmark top-k accuracy against scikit-learn's ``top_k_accuracy_score`` on the same arrays.

Run ``python -m bench.bench_topk`` (1M rows x 100 classes, k = 5) or ``--rows 100000``. Seeded
scores rounded to 3 decimals (ties). Ours: ``top_k_metrics`` (top-k and top-1) on the arrays the
scorer holds after reading; scikit-learn: ``top_k_accuracy_score`` for k and for 1. Values must be
identical (``==``). CSV reading is not timed.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import top_k_accuracy_score

from bench.metric_ratio import arguments, compare
from services.scorer.builtin.probabilities import Scores
from services.scorer.builtin.topk import top_k_metrics


def main() -> None:
    args = arguments(__doc__, 1_000_000, classes=100, k=5)
    rng = np.random.default_rng(args.seed)
    y = rng.integers(0, args.classes, args.rows)
    scores = rng.random((args.rows, args.classes))
    scores[np.arange(args.rows), y] += rng.random(args.rows) * 0.3
    scores = np.round(scores, 3)
    data = Scores([f"c{i:04d}" for i in range(args.classes)], y, scores)
    labels = np.arange(args.classes)
    compare(
        f"{args.rows:,} rows x {args.classes} classes, k={args.k}",
        lambda: list(top_k_metrics(data, args.k).values())[:2],
        lambda: [top_k_accuracy_score(y, scores, k=k, labels=labels) for k in (args.k, 1)],
        args.repeat,
    )


if __name__ == "__main__":
    main()
