"""Agreement on ordered classes: ``quadratic_weighted_kappa`` and ``cohen_kappa``, on CSV
``id,label`` files (the classification format).

Labels are integers (``0``, ``3``, ``-1``; ``2.0`` counts as ``2``) ordered by value, unless the
param ``labels`` lists the classes in their order, in which case labels are strings compared
exactly and every label must be one of them. As in scikit-learn the weights use the class
*positions* in that order, not the values: with classes 1, 2 and 5, the distance from 1 to 5 is 2.

The confusion matrix is one ``np.bincount``; from it the scorer evaluates the very expressions of
``sklearn.metrics.cohen_kappa_score`` (weights None, "linear", "quadratic"), so the values are
bit-identical to it with ``labels`` set to the same classes.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from services.scorer.builtin.probabilities import bad_rows
from services.scorer.builtin.regression import to_floats
from services.scorer.builtin.tabular import GT, PRED, Column, CsvFile, IntArray, read_pair
from services.scorer.builtin.variants import variant
from shared.errors import ErrorCode
from shared.models import MetricValue, Result
from shared.scoring import ScorerDef
from shared.workspace import Workspace

HEADERS = (("id", "label"),)
EXPECTED_FILES = ("input/gt.csv", "output/pred.csv")
DIRECT_SPAN = 1 << 20  # integer labels spanning at most this many values are coded by a table
WEIGHTS = {
    "cohen_kappa": None,
    "linear_weighted_kappa": "linear",
    "quadratic_weighted_kappa": "quadratic",
}

FloatArray = npt.NDArray[np.float64]


LABELS_HELP = (
    "the classes in their order (strings, compared exactly); default: integer labels "
    "ordered by value, the classes being those found in either file"
)


class OrdinalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] | None = Field(None, min_length=2, description=LABELS_HELP)


def _integers(column: Column, source: CsvFile) -> npt.NDArray[np.int64]:
    values = to_floats(column, source)
    bad = np.flatnonzero((values != np.round(values)) | (np.abs(values) > 2.0**53))
    if len(bad):
        raise bad_rows(
            source,
            column.ids,
            bad,
            f"label {column.values[int(bad[0])].as_py()!r} is not an integer "
            "(set the param labels to use other labels)",
        )
    return values.astype(np.int64)


def integer_codes(
    gt: npt.NDArray[np.int64], pred: npt.NDArray[np.int64]
) -> tuple[IntArray, IntArray, int, list[str]]:
    """Codes of both files' integers in sorted order of the union of their values."""
    low = int(min(gt.min(), pred.min()))
    span = int(max(gt.max(), pred.max())) - low + 1
    if span <= DIRECT_SPAN:
        present = np.flatnonzero(
            np.bincount(gt - low, minlength=span) + np.bincount(pred - low, minlength=span)
        )
        code = np.zeros(span, dtype=np.int64)
        code[present] = np.arange(len(present))
        return code[gt - low], code[pred - low], len(present), (present + low).astype(str).tolist()
    values, inverse = np.unique(np.concatenate([gt, pred]), return_inverse=True)
    return inverse[: len(gt)], inverse[len(gt) :], len(values), values.astype(str).tolist()


def _named_codes(column: Column, source: CsvFile, labels: list[str]) -> IntArray:
    codes = pc.index_in(column.values, value_set=pa.array(labels, type=pa.string()))
    if codes.null_count:
        bad = np.flatnonzero(np.asarray(pc.is_null(codes).to_numpy(zero_copy_only=False)))
        raise bad_rows(
            source,
            column.ids,
            bad,
            f"label {column.values[int(bad[0])].as_py()!r} is not one of the labels in params",
        )
    return np.asarray(codes.to_numpy(), dtype=np.int64)


def kappa(confusion: FloatArray, weights: str | None) -> float:
    """``cohen_kappa_score`` from its float64 confusion matrix; NaN where it is undefined."""
    n_classes = confusion.shape[0]
    sum0 = np.sum(confusion, axis=0)
    sum1 = np.sum(confusion, axis=1)
    denominator = np.sum(sum0)
    if denominator == 0:
        return float("nan")
    expected = np.outer(sum0, sum1) / denominator
    if weights is None:
        w_mat = np.ones([n_classes, n_classes], dtype=np.float64)
        np.fill_diagonal(w_mat, 0)
    else:
        w_mat = np.zeros([n_classes, n_classes], dtype=np.float64)
        w_mat += np.arange(n_classes)
        w_mat = np.abs(w_mat - w_mat.T) if weights == "linear" else (w_mat - w_mat.T) ** 2
    expected_disagreement = np.sum(w_mat * expected)
    if expected_disagreement == 0:
        return float("nan")
    return float(1 - np.sum(w_mat * confusion) / expected_disagreement)


def ordinal_metrics(y_true: IntArray, y_pred: IntArray, n_classes: int) -> dict[str, MetricValue]:
    """Kappas (left out where undefined: both files hold one and the same class) and accuracy."""
    cells = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    confusion = cells.reshape(n_classes, n_classes).astype(np.float64)
    metrics: dict[str, MetricValue] = {}
    for name, weights in WEIGHTS.items():
        value = kappa(confusion, weights)
        if not np.isnan(value):
            metrics[name] = value
    metrics["accuracy"] = float(np.count_nonzero(y_true == y_pred) / len(y_true))
    return metrics


def _score(ws: Workspace, params: OrdinalParams, primary: str) -> Result:
    started = time.perf_counter()
    pair = read_pair(ws, HEADERS)
    if params.labels is None:
        y_true, y_pred, n_classes, classes = integer_codes(
            _integers(pair.gt, GT), pair.aligned(_integers(pair.pred, PRED))
        )
    else:
        classes, n_classes = params.labels, len(params.labels)
        y_true = _named_codes(pair.gt, GT, classes)
        y_pred = pair.aligned(_named_codes(pair.pred, PRED, classes))
    read_s = time.perf_counter() - started
    metrics = ordinal_metrics(y_true, y_pred, n_classes)
    metrics["n_samples"] = float(len(pair))
    metrics["n_classes"] = float(n_classes)
    value = metrics.get(primary)
    if not isinstance(value, float):
        raise GT.error(
            ErrorCode.BAD_FORMAT,
            f"{primary} is undefined: the ground truth and the predictions hold one "
            f"and the same class ({classes[int(y_true[0])]!r}) only",
            metric=primary,
        )
    return Result(
        summary={primary: value, "score": value},
        metrics=metrics,
        timing={"read_s": read_s, "metrics_s": time.perf_counter() - started - read_s},
    )


def _scorer(name: str, what: str) -> ScorerDef[OrdinalParams]:
    return variant(
        _score,
        OrdinalParams,
        name=name,
        primary=name,
        task_type="ordinal",
        description=what + " Also reports linear weighted kappa and accuracy. CSV "
        "id,label; integer labels ordered by value unless the param labels orders "
        "them; identical to scikit-learn's cohen_kappa_score.",
        expected_files=EXPECTED_FILES,
    )


quadratic_weighted_kappa = _scorer(
    "quadratic_weighted_kappa",
    "Quadratic weighted kappa: agreement on ordered classes, a "
    "disagreement weighted by the squared distance between the classes.",
)
cohen_kappa = _scorer(
    "cohen_kappa", "Cohen's kappa: agreement beyond chance, every disagreement weighted alike."
)
