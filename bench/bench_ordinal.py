"""Benchmark the kappas against scikit-learn's ``cohen_kappa_score`` on the same arrays.

Run ``python -m bench.bench_ordinal`` (10M rows, ratings 0-5) or ``--rows 1000000``. Seeded: the
prediction is the rating plus noise, clipped. Ours: the scorer's integer coding plus
``ordinal_metrics`` (quadratic, linear and unweighted kappa, accuracy) on the int64 ratings as
read; scikit-learn: ``cohen_kappa_score`` with each of the three weights. Values must be identical.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import cohen_kappa_score

from bench.bench_probabilities import timed
from services.scorer.builtin.ordinal import WEIGHTS, integer_codes, ordinal_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    y_true = rng.integers(0, 6, args.rows)
    y_pred = np.clip(y_true + rng.integers(-2, 3, args.rows), 0, 5)

    def ours() -> list[float]:
        codes_true, codes_pred, n_classes, _ = integer_codes(y_true, y_pred)
        metrics = ordinal_metrics(codes_true, codes_pred, n_classes)
        return [metrics[name] for name in WEIGHTS]  # type: ignore[misc]

    values, ours_s = timed(ours)
    theirs, sklearn_s = timed(lambda: [cohen_kappa_score(y_true, y_pred, weights=w)
                                       for w in WEIGHTS.values()])
    same = values == theirs
    print(f"{args.rows:,} rows, 6 ratings: ours {ours_s:.3f} s, sklearn {sklearn_s:.3f} s, "
          f"ratio {ours_s / sklearn_s:.4f}, identical {same}")
    if not same:
        raise SystemExit(f"values differ from scikit-learn: {values} vs {theirs}")


if __name__ == "__main__":
    main()
