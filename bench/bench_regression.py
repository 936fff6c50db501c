"""Benchmark the regression metrics against scikit-learn on the same arrays.

Run ``python -m bench.bench_regression`` (10M rows) or ``--rows 1000000``. Seeded positive values
(so RMSLE is defined); best of ``--repeat`` interleaved runs. Ours: ``regression_metrics`` (RMSE,
MSE, MAE, R², MAPE, RMSLE, median absolute error, explained variance, sharing intermediates);
scikit-learn: the eight functions on the same float64 arrays. Values must be identical. CSV
reading is not timed.
"""

from __future__ import annotations

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

from bench.metric_ratio import arguments, compare
from services.scorer.builtin.regression import regression_metrics
from shared.models import MetricValue

REFERENCE = {
    "rmse": root_mean_squared_error,
    "mse": mean_squared_error,
    "mae": mean_absolute_error,
    "r2": r2_score,
    "mape": mean_absolute_percentage_error,
    "rmsle": root_mean_squared_log_error,
    "median_ae": median_absolute_error,
    "explained_variance": explained_variance_score,
}


def _reported(metrics: dict[str, MetricValue]) -> dict[str, MetricValue]:
    return {name: metrics[name] for name in REFERENCE}


def main() -> None:
    args = arguments(__doc__, 10_000_000, repeat=3)
    rng = np.random.default_rng(args.seed)
    y_true = rng.gamma(2.0, 50.0, args.rows)
    y_pred = np.abs(y_true + rng.standard_normal(args.rows) * 10)
    compare(
        f"{args.rows:,} rows, 8 metrics",
        lambda: _reported(regression_metrics(y_true, y_pred)),
        lambda: {name: fn(y_true, y_pred) for name, fn in REFERENCE.items()},
        args.repeat,
    )


if __name__ == "__main__":
    main()
