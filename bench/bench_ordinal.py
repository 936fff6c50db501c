"""Benchmark the kappas against scikit-learn's ``cohen_kappa_score`` on the same arrays.

Run ``python -m bench.bench_ordinal`` (10M rows, ratings 0-5) or ``--rows 1000000``. Seeded: the
prediction is the rating plus noise, clipped. Ours: the scorer's integer coding plus
``ordinal_metrics`` (quadratic, linear and unweighted kappa, accuracy) on the int64 ratings as
read; scikit-learn: ``cohen_kappa_score`` with each of the three weights. Values must be identical.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score

from bench.metric_ratio import arguments, compare
from services.scorer.builtin.ordinal import WEIGHTS, integer_codes, ordinal_metrics
from shared.models import MetricValue


def main() -> None:
    args = arguments(__doc__, 10_000_000)
    rng = np.random.default_rng(args.seed)
    y_true = rng.integers(0, 6, args.rows)
    y_pred = np.clip(y_true + rng.integers(-2, 3, args.rows), 0, 5)

    def ours() -> list[MetricValue]:
        codes_true, codes_pred, n_classes, _ = integer_codes(y_true, y_pred)
        metrics = ordinal_metrics(codes_true, codes_pred, n_classes)
        return [metrics[name] for name in WEIGHTS]

    compare(
        f"{args.rows:,} rows, 6 ratings",
        ours,
        lambda: [cohen_kappa_score(y_true, y_pred, weights=w) for w in WEIGHTS.values()],
        args.repeat,
    )


if __name__ == "__main__":
    main()
