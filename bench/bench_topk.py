"""Benchmark top-k accuracy against scikit-learn's ``top_k_accuracy_score`` on the same arrays.

Run ``python -m bench.bench_topk`` (1M rows x 100 classes, k = 5) or ``--rows 100000``. Seeded
scores rounded to 3 decimals (ties). Ours: ``top_k_metrics`` (top-k and top-1) on the arrays the
scorer holds after reading; scikit-learn: ``top_k_accuracy_score`` for k and for 1. Values must be
identical (``==``). CSV reading is not timed.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import top_k_accuracy_score

from bench.bench_probabilities import timed
from services.scorer.builtin.probabilities import Scores
from services.scorer.builtin.topk import top_k_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    y = rng.integers(0, args.classes, args.rows)
    scores = rng.random((args.rows, args.classes))
    scores[np.arange(args.rows), y] += rng.random(args.rows) * 0.3
    scores = np.round(scores, 3)
    data = Scores([f"c{i:04d}" for i in range(args.classes)], y, scores)
    ours, ours_s = timed(lambda: top_k_metrics(data, args.k))
    theirs, sklearn_s = timed(lambda: [top_k_accuracy_score(y, scores, k=kk,
                                                            labels=np.arange(args.classes))
                                       for kk in (args.k, 1)])
    same = [ours["top_k_accuracy"], ours["top_1_accuracy"]] == theirs
    print(f"{args.rows:,} rows x {args.classes} classes, k={args.k}: ours {ours_s:.3f} s, "
          f"sklearn {sklearn_s:.3f} s, ratio {ours_s / sklearn_s:.4f}, identical {same}")
    if not same:
        raise SystemExit(f"values differ from scikit-learn: {ours} vs {theirs}")


if __name__ == "__main__":
    main()
