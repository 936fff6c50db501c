"""``regression_rmse``: CSV ``id,value`` (or ``id,label``) files, scikit-learn's error metrics.

Values are parsed by pyarrow's string-to-float64 cast (correctly rounded, so ``repr(x)`` reads back
as ``x``) and must be finite. The metrics repeat the expressions of ``sklearn.metrics`` in this
scikit-learn version, on the same ``(n, 1)`` shapes, so ``rmse``, ``mse``, ``mae``, ``r2``,
``mape``, ``rmsle``, ``median_ae`` and ``explained_variance`` are bit-identical to
``root_mean_squared_error``, ``mean_squared_error``, ``mean_absolute_error``, ``r2_score``,
``mean_absolute_percentage_error``, ``root_mean_squared_log_error``, ``median_absolute_error`` and
``explained_variance_score`` (``force_finite`` handling of a constant ground truth kept).
``regression_mae``, ``regression_mape``, ``regression_rmsle``, ``regression_median_ae`` and
``regression_explained_variance`` report the same metrics with another primary one.
"""

from __future__ import annotations

import math
import time

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ConfigDict

from services.scorer.builtin.plots import PlotParams
from services.scorer.builtin.plots.regression import plot_regression
from services.scorer.builtin.tabular import EXAMPLES, GT, PRED, Column, CsvFile, read_pair
from services.scorer.builtin.variants import variant
from shared.errors import ErrorCode
from shared.models import MetricValue, Result
from shared.scoring import ScorerDef, register
from shared.workspace import Workspace

HEADERS = (("id", "value"), ("id", "label"))
EXPECTED_FILES = ("input/gt.csv", "output/pred.csv")

FloatArray = npt.NDArray[np.float64]


class RegressionParams(PlotParams):
    model_config = ConfigDict(extra="forbid")


def to_floats(column: Column, source: CsvFile) -> FloatArray:
    """The value column as float64, or BAD_FORMAT naming the first rows that are not finite."""
    try:
        values = pc.cast(column.values, pa.float64())
    except pa.ArrowInvalid as exc:
        row = _first_unparsable(column.values)
        raise _bad_values(column, source, [row], "is not a number") from exc
    array = np.asarray(values.to_numpy(), dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(array))
    if len(bad):
        raise _bad_values(column, source, [int(i) for i in bad[:EXAMPLES]], "is not finite")
    return array


def _first_unparsable(values: pa.ChunkedArray) -> int:
    """Index of the first value the float cast refuses, found by bisection (O(n) casts in total)."""
    low, high = 0, len(values)  # the culprit lies in values[low:high]
    while high - low > 1:
        middle = (low + high) // 2
        try:
            pc.cast(values[low:middle], pa.float64())
        except pa.ArrowInvalid:
            high = middle
        else:
            low = middle
    return low


def _bad_values(column: Column, source: CsvFile, rows: list[int], problem: str) -> Exception:
    name = column.header[1]
    ids = [column.ids[i].as_py() for i in rows]
    texts = [column.values[i].as_py() for i in rows]
    return source.error(
        ErrorCode.BAD_FORMAT,
        f"{name} {texts[0]!r} at row {rows[0] + 1} (id {ids[0]!r}) {problem}",
        column=name,
        rows=[i + 1 for i in rows],
        ids=ids,
        values=texts,
    )


def regression_metrics(y_true: FloatArray, y_pred: FloatArray) -> dict[str, MetricValue]:
    """sklearn's formulas on ``(n, 1)`` arrays, bit for bit, ordered so that each elementwise
    step is done once and written into one of two scratch arrays (fresh arrays cost more in page
    faults than in arithmetic). A mean is the sum divided by n in NumPy, so a sum already taken
    gives its mean. ``r2`` and ``explained_variance`` are left out below two rows (sklearn: NaN),
    ``rmsle`` where a value is <= -1 (sklearn raises), and any metric that overflows."""
    true, pred = y_true.reshape(-1, 1), y_pred.reshape(-1, 1)
    n = len(true)
    a, b = np.empty_like(true), np.empty_like(true)
    extras: dict[str, float] = {}
    with np.errstate(over="ignore"):
        residual = np.subtract(true, pred, out=a)
        squared_sum = np.sum(np.square(residual, out=b), axis=0)  # sum((true - pred) ** 2)
        mse_per_output = squared_sum / n  # == np.average(squared, axis=0)
        if n >= 2:  # below two rows sklearn gives NaN for both
            centred = np.subtract(residual, np.average(residual, axis=0), out=b)
            extras["explained_variance"], extras["r2"] = _fractions(
                true, np.average(np.square(centred, out=b), axis=0), squared_sum, b
            )
        abs_diff = np.abs(residual, out=a)  # == |pred - true|
        metrics: dict[str, MetricValue] = {
            "rmse": float(np.average(np.sqrt(mse_per_output))),
            "mse": float(np.average(mse_per_output)),
            "mae": float(np.average(np.average(abs_diff, axis=0))),
        }
        floor = np.maximum(np.abs(true, out=b), np.finfo(np.float64).eps, out=b)
        extras["mape"] = float(np.average(np.average(np.divide(abs_diff, floor, out=b), axis=0)))
        metrics["median_ae"] = _median(abs_diff.ravel())  # reorders a
        if true.min() > -1 and pred.min() > -1:  # sklearn refuses values <= -1
            log_diff = np.subtract(np.log1p(true, out=a), np.log1p(pred, out=b), out=a)
            log_mse = np.average(np.square(log_diff, out=log_diff), axis=0)
            extras["rmsle"] = float(np.average(np.sqrt(log_mse)))
    # a spread of ~1e-300 overflows a ratio: no r2 rather than -inf (likewise the others)
    metrics.update((name, value) for name, value in extras.items() if math.isfinite(value))
    return metrics


def _median(values: FloatArray) -> float:
    """``np.median`` of NaN-free values, bit for bit (the mean of the middle one or two), in
    place: one single-``kth`` partition (NumPy's SIMD path) and a ``max`` below it, where
    ``np.median`` partitions at two ``kth`` at once, which is ~10x slower."""
    middle = len(values) // 2
    values.partition(middle)
    if len(values) % 2:
        return float(np.mean(values[middle : middle + 1]))
    return float(np.mean(np.array([values[:middle].max(), values[middle]])))


def _fractions(
    true: FloatArray, ev_numerator: FloatArray, squared_sum: FloatArray, scratch: FloatArray
) -> tuple[float, float]:
    """``explained_variance_score`` and ``r2_score`` with ``force_finite=True`` (perfect -> 1.0,
    constant truth otherwise -> 0.0): both divide by the spread of ``true``."""
    deviation = np.subtract(true, np.average(true, axis=0), out=scratch)
    spread = np.sum(np.square(deviation, out=scratch), axis=0)
    return (
        _explained_fraction(ev_numerator, spread / len(true)),
        _explained_fraction(squared_sum, spread),
    )


def _explained_fraction(numerator: FloatArray, denominator: FloatArray) -> float:
    """sklearn's ``_assemble_fraction_of_explained_deviance`` with ``force_finite=True``."""
    scores = np.ones(1, dtype=numerator.dtype)
    valid = (denominator != 0) & (numerator != 0)
    scores[valid] = 1 - (numerator[valid] / denominator[valid])
    scores[(numerator != 0) & (denominator == 0)] = 0.0
    return float(np.average(scores))


def _refuse_log_domain(column: Column, source: CsvFile, values: FloatArray) -> None:
    bad = np.flatnonzero(values <= -1)
    if len(bad):
        raise _bad_values(
            column, source, [int(i) for i in bad[:EXAMPLES]], "is <= -1: RMSLE takes log(1 + value)"
        )


def _score(ws: Workspace, params: RegressionParams, primary: str) -> Result:
    started = time.perf_counter()
    pair = read_pair(ws, HEADERS)
    y_true = to_floats(pair.gt, GT)
    pred_values = to_floats(pair.pred, PRED)
    if primary == "rmsle":
        _refuse_log_domain(pair.gt, GT, y_true)
        _refuse_log_domain(pair.pred, PRED, pred_values)
    y_pred = pair.aligned(pred_values)
    read_s = time.perf_counter() - started
    metrics = regression_metrics(y_true, y_pred)
    metrics["n_samples"] = float(len(pair))
    value = metrics.get(primary)
    if not isinstance(value, float):  # r2-like: one row, or an overflow
        raise GT.error(
            ErrorCode.BAD_FORMAT,
            f"{primary} is undefined for these values (it needs two rows, and a finite ratio)",
            metric=primary,
        )
    metrics_done = time.perf_counter()
    artifacts = plot_regression(ws, y_true, y_pred) if params.plots else {}
    return Result(
        summary={primary: value, "score": value},
        metrics=metrics,
        artifacts=artifacts,
        timing={
            "read_s": read_s,
            "metrics_s": metrics_done - started - read_s,
            "artifacts_s": time.perf_counter() - metrics_done,
        },
    )


@register(
    "regression_rmse",
    version="1.0.0",
    task_type="regression",
    description="Root mean squared error, plus MSE, MAE, R², MAPE, RMSLE, median absolute error "
    "and explained variance, identical to scikit-learn.",
    expected_files=EXPECTED_FILES,
    primary_metric="rmse",
    higher_is_better=False,
    params=RegressionParams,
)
def regression_rmse(ws: Workspace, params: RegressionParams) -> Result:
    return _score(ws, params, "rmse")


def _scorer(
    name: str, primary: str, what: str, higher_is_better: bool = False
) -> ScorerDef[RegressionParams]:
    return variant(
        _score,
        RegressionParams,
        name=name,
        primary=primary,
        task_type="regression",
        description=what + " Reports the same metrics as regression_rmse, identical "
        "to scikit-learn.",
        expected_files=EXPECTED_FILES,
        higher_is_better=higher_is_better,
    )


regression_mae = _scorer("regression_mae", "mae", "Mean absolute error.")
regression_mape = _scorer(
    "regression_mape",
    "mape",
    "Mean absolute percentage error, as a "
    "fraction (0.1 is 10%); a zero truth divides by machine epsilon.",
)
regression_rmsle = _scorer(
    "regression_rmsle",
    "rmsle",
    "Root mean squared logarithmic error: RMSE of log(1 + value); values <= -1 are refused.",
)
regression_median_ae = _scorer("regression_median_ae", "median_ae", "Median absolute error.")
regression_explained_variance = _scorer(
    "regression_explained_variance",
    "explained_variance",
    "Explained variance score (1 is perfect).",
    higher_is_better=True,
)
