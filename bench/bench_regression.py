"""Benchmark the regression metrics against scikit-learn on the same arrays.

Run ``python -m bench.bench_regression`` (10M rows) or ``--rows 1000000``. Seeded positive values
(so RMSLE is defined); best of ``--repeat`` interleaved runs. Ours: ``regression_metrics`` (RMSE,
MSE, MAE, R², MAPE, RMSLE, median absolute error, explained variance, sharing intermediates);
scikit-learn: the eight functions on the same float64 arrays. Values must be identical. CSV
reading is not timed.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import (
    explained_variance_score,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    median_absolute_error,
    r2_score,
    root_mean_squared_error,
    root_mean_squared_log_error,
)

from bench.bench_probabilities import timed
from services.scorer.builtin.regression import regression_metrics

REFERENCE = {
    "rmse": root_mean_squared_error, "mse": mean_squared_error, "mae": mean_absolute_error,
    "r2": r2_score, "mape": mean_absolute_percentage_error, "rmsle": root_mean_squared_log_error,
    "median_ae": median_absolute_error, "explained_variance": explained_variance_score,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    y_true = rng.gamma(2.0, 50.0, args.rows)
    y_pred = np.abs(y_true + rng.standard_normal(args.rows) * 10)
    runs = []
    for _ in range(args.repeat):  # interleaved; the best of each (the first pays page faults)
        runs.append((timed(lambda: regression_metrics(y_true, y_pred)),
                     timed(lambda: {name: fn(y_true, y_pred) for name, fn in REFERENCE.items()})))
    (ours, _), (theirs, _) = runs[0]
    ours_s = min(run[0][1] for run in runs)
    sklearn_s = min(run[1][1] for run in runs)
    same = {name: ours[name] for name in REFERENCE} == theirs
    print(f"{args.rows:,} rows, 8 metrics: ours {ours_s:.3f} s, sklearn {sklearn_s:.3f} s, "
          f"ratio {ours_s / sklearn_s:.4f}, identical {same}")
    if not same:
        raise SystemExit(f"values differ from scikit-learn: {ours} vs {theirs}")


if __name__ == "__main__":
    main()
