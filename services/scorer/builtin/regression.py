"""``regression_rmse``: CSV ``id,value`` (or ``id,label``) files, scikit-learn's error metrics.

Values are parsed by pyarrow's string-to-float64 cast (correctly rounded, so ``repr(x)`` reads back
as ``x``) and must be finite. The metrics repeat the expressions of ``sklearn.metrics`` in this
scikit-learn version, on the same ``(n, 1)`` shapes, so ``rmse``, ``mse``, ``mae`` and ``r2`` are
bit-identical to ``root_mean_squared_error``, ``mean_squared_error``, ``mean_absolute_error`` and
``r2_score`` (whose ``force_finite`` handling of a constant ground truth is kept).
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
from shared.errors import ErrorCode
from shared.models import MetricValue, Result
from shared.scoring import register
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
    """sklearn's formulas on ``(n, 1)`` arrays; ``r2`` is left out below two rows (sklearn: NaN)
    and where it overflows (sklearn: -inf, which no result may hold)."""
    true, pred = y_true.reshape(-1, 1), y_pred.reshape(-1, 1)
    mse_per_output = np.average((true - pred) ** 2, axis=0)
    metrics: dict[str, MetricValue] = {
        "rmse": float(np.average(np.sqrt(mse_per_output))),
        "mse": float(np.average(mse_per_output)),
        "mae": float(np.average(np.average(np.abs(pred - true), axis=0))),
    }
    if len(true) >= 2:
        r2 = _r2(true, pred)
        if math.isfinite(r2):  # a spread of ~1e-300 overflows the ratio: no r2 rather than -inf
            metrics["r2"] = r2
    return metrics


def _r2(true: FloatArray, pred: FloatArray) -> float:
    """``r2_score`` with ``force_finite=True``: perfect -> 1.0, constant truth otherwise -> 0.0."""
    numerator = np.sum(1.0 * (true - pred) ** 2, axis=0)
    denominator = np.sum(1.0 * (true - np.average(true, axis=0)) ** 2, axis=0)
    scores = np.ones(1, dtype=numerator.dtype)
    valid = (denominator != 0) & (numerator != 0)
    with np.errstate(over="ignore"):
        scores[valid] = 1 - (numerator[valid] / denominator[valid])
    scores[(numerator != 0) & (denominator == 0)] = 0.0
    return float(np.average(scores))


@register(
    "regression_rmse",
    version="1.0.0",
    task_type="regression",
    description="Root mean squared error, plus MSE, MAE and R², identical to scikit-learn.",
    expected_files=EXPECTED_FILES,
    primary_metric="rmse",
    higher_is_better=False,
    params=RegressionParams,
)
def regression_rmse(ws: Workspace, params: RegressionParams) -> Result:
    started = time.perf_counter()
    pair = read_pair(ws, HEADERS)
    y_true = to_floats(pair.gt, GT)
    y_pred = pair.aligned(to_floats(pair.pred, PRED))
    read_s = time.perf_counter() - started
    metrics = regression_metrics(y_true, y_pred)
    metrics["n_samples"] = float(len(pair))
    rmse = metrics["rmse"]
    assert isinstance(rmse, float)
    metrics_done = time.perf_counter()
    artifacts = plot_regression(ws, y_true, y_pred) if params.plots else {}
    return Result(
        summary={"rmse": rmse, "score": rmse},
        metrics=metrics,
        artifacts=artifacts,
        timing={
            "read_s": read_s,
            "metrics_s": metrics_done - started - read_s,
            "artifacts_s": time.perf_counter() - metrics_done,
        },
    )
