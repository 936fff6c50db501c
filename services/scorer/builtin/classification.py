"""``classification_f1`` and ``classification_accuracy`` on CSV ``id,label`` files.

Labels are strings compared exactly. They are integer-coded once (pyarrow ``dictionary_encode``
over both files), the codes renumbered so that code order is the sorted order scikit-learn uses,
and every metric is computed from three ``np.bincount`` results (true positives, true and predicted
counts per class) with the very expressions of ``sklearn.metrics.precision_recall_fscore_support``.
The numbers are therefore bit-identical to scikit-learn's, not merely close (tests check it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ConfigDict, Field

from services.scorer.builtin.plots import PlotParams
from services.scorer.builtin.plots.classification import ClassTable, plot_classification
from services.scorer.builtin.tabular import GT, PRED, IntArray, Pair, read_pair, refuse_empty_values
from shared.files import atomic_write_bytes, make_artifact
from shared.models import Artifact, MetricValue, Result
from shared.scoring import register
from shared.workspace import Workspace

HEADERS = (("id", "label"),)
EXPECTED_FILES = ("input/gt.csv", "output/pred.csv")
CONFUSION_PATH = "output/artifacts/confusion_matrix.json"
DENSE_LIMIT = 1000  # up to this many labels the confusion matrix is written dense
SPARSE_LIMIT = 50_000  # beyond this many labels (junk predictions) it is not written at all

FloatArray = npt.NDArray[np.float64]


class ClassificationParams(PlotParams):
    model_config = ConfigDict(extra="forbid")

    allow_empty_label: bool = Field(
        False, description="score an empty label as a class of its own instead of refusing it"
    )
    confusion_matrix: bool = Field(True, description=f"write {CONFUSION_PATH}")


@dataclass(frozen=True, slots=True)
class Encoded:
    """Labels in sorted order and both columns as codes into it (pred in gt row order)."""

    labels: list[str]
    y_true: IntArray
    y_pred: IntArray


@dataclass(frozen=True, slots=True)
class Counts:
    """Per class (in label order): true positives, rows truly of it, rows predicted as it."""

    tp: IntArray
    true_sum: IntArray
    pred_sum: IntArray


def encode(pair: Pair) -> Encoded:
    both = pa.chunked_array(pair.gt.values.chunks + pair.pred.values.chunks, type=pa.string())
    encoded = both.dictionary_encode()
    dictionary = encoded.chunks[-1].dictionary  # shared by every chunk, first-seen order
    order = np.asarray(pc.array_sort_indices(dictionary), dtype=np.int64)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    codes = rank[np.concatenate([chunk.indices.to_numpy() for chunk in encoded.chunks])]
    n = len(pair)
    labels = dictionary.take(pa.array(order)).to_pylist()
    return Encoded(labels, codes[:n], pair.aligned(codes[n:]))


def count(y_true: IntArray, y_pred: IntArray, n_classes: int) -> Counts:
    return Counts(
        tp=np.bincount(y_true[y_true == y_pred], minlength=n_classes),
        true_sum=np.bincount(y_true, minlength=n_classes),
        pred_sum=np.bincount(y_pred, minlength=n_classes),
    )


def _divide(numerator: npt.NDArray[np.generic], denominator: npt.NDArray[np.generic]) -> FloatArray:
    """sklearn's ``_prf_divide``: a zero denominator gives 0.0 (its default ``zero_division``)."""
    mask = denominator == 0
    safe = np.asarray(denominator, dtype=np.float64).copy()
    safe[mask] = 1
    result: FloatArray = np.asarray(numerator, dtype=np.float64) / safe
    result[mask] = 0.0
    return result


def _prf(tp: IntArray, true_sum: IntArray, pred_sum: IntArray) -> tuple[FloatArray, ...]:
    """Precision, recall and F1 per class, as ``precision_recall_fscore_support`` (beta=1)."""
    precision = _divide(tp, pred_sum)
    recall = _divide(tp, true_sum)
    denominator = 1 * true_sum.astype(np.float64) + pred_sum.astype(np.float64)
    f1 = _divide((1 + 1) * tp.astype(np.float64), denominator)
    return precision, recall, f1


def _per_class(
    labels: list[str], values: npt.NDArray[np.generic], keep: npt.NDArray[np.bool_]
) -> dict[str, float]:
    kept = [label for label, wanted in zip(labels, keep.tolist(), strict=True) if wanted]
    return dict(zip(kept, values[keep].astype(np.float64).tolist(), strict=True))


def f1_metrics(labels: list[str], counts: Counts) -> dict[str, MetricValue]:
    """Averages over every label, as sklearn; per-class values for ground-truth labels only.

    A label found only in the predictions has precision, recall and F1 of 0 by definition; it is
    counted (``n_pred_only_classes``) but not listed, so junk predictions cannot bloat the result.
    """
    precision, recall, f1 = _prf(counts.tp, counts.true_sum, counts.pred_sum)
    totals = [np.reshape(np.sum(c), (1,)) for c in (counts.tp, counts.true_sum, counts.pred_sum)]
    micro = _prf(*totals)
    in_gt = counts.true_sum > 0
    metrics: dict[str, MetricValue] = {}
    for name, per_class, micro_value in zip(
        ("precision", "recall", "f1"), (precision, recall, f1), micro, strict=True
    ):
        metrics[f"{name}_macro"] = float(np.nanmean(per_class))
        metrics[f"{name}_micro"] = float(np.nanmean(micro_value))
        metrics[f"{name}_weighted"] = float(np.average(per_class, weights=counts.true_sum))
        metrics[f"{name}_per_class"] = _per_class(labels, per_class, in_gt)
    metrics["support_per_class"] = _per_class(labels, counts.true_sum, in_gt)
    metrics["n_pred_only_classes"] = float(np.count_nonzero(~in_gt))
    return metrics


def accuracy_metrics(labels: list[str], counts: Counts, n_samples: int) -> dict[str, MetricValue]:
    """Accuracy, balanced accuracy, and per-class accuracy (recall) of every ground-truth class."""
    in_gt = counts.true_sum > 0
    recall = counts.tp[in_gt] / counts.true_sum[in_gt]
    return {
        "accuracy": int(np.sum(counts.tp)) / n_samples,
        "balanced_accuracy": float(np.mean(recall)),
        "accuracy_per_class": _per_class(labels, counts.tp / np.maximum(counts.true_sum, 1), in_gt),
        "support_per_class": _per_class(labels, counts.true_sum, in_gt),
        "n_pred_only_classes": float(np.count_nonzero(~in_gt)),
    }


def confusion_document(encoded: Encoded) -> dict[str, object]:
    """Rows are true labels, columns predicted labels, both in ``labels`` order (as sklearn)."""
    k = len(encoded.labels)
    keys = encoded.y_true * k + encoded.y_pred
    doc: dict[str, object] = {"labels": encoded.labels, "rows": "true", "columns": "pred"}
    if k <= DENSE_LIMIT:
        matrix = np.bincount(keys, minlength=k * k).reshape(k, k)
        doc.update(format="dense", matrix=matrix.tolist())
    else:
        cells, cell_counts = np.unique(keys, return_counts=True)
        doc.update(
            format="coo",
            true=(cells // k).tolist(),
            pred=(cells % k).tolist(),
            count=cell_counts.tolist(),
        )
    return doc


def write_confusion(ws: Workspace, encoded: Encoded) -> Artifact:
    path = ws.root / CONFUSION_PATH
    data = json.dumps(confusion_document(encoded), ensure_ascii=False, separators=(",", ":"))
    atomic_write_bytes(path, data.encode("utf-8"))
    return make_artifact(
        ws.root,
        path,
        media_type="application/json",
        description="confusion matrix: rows true labels, columns predicted labels",
    )


def _plots(ws: Workspace, encoded: Encoded, counts: Counts) -> dict[str, Artifact]:
    precision, recall, f1 = _prf(counts.tp, counts.true_sum, counts.pred_sum)
    table = ClassTable(
        encoded.labels, encoded.y_true, encoded.y_pred, precision, recall, f1, counts.true_sum
    )
    return plot_classification(ws, table)


Metrics = Callable[[Encoded, Counts], dict[str, MetricValue]]


def _score(
    ws: Workspace, params: ClassificationParams, primary: str, metrics_of: Metrics
) -> Result:
    started = time.perf_counter()
    pair = read_pair(ws, HEADERS)
    if not params.allow_empty_label:
        refuse_empty_values(pair.gt, GT)
        refuse_empty_values(pair.pred, PRED)
    encoded = encode(pair)
    read_s = time.perf_counter() - started
    counts = count(encoded.y_true, encoded.y_pred, len(encoded.labels))
    metrics = metrics_of(encoded, counts)
    metrics["n_samples"] = float(len(pair))
    metrics["n_classes"] = float(len(encoded.labels))
    metrics_done = time.perf_counter()
    artifacts = {}
    if params.confusion_matrix and len(encoded.labels) <= SPARSE_LIMIT:
        artifacts["confusion_matrix"] = write_confusion(ws, encoded)
    if params.plots:
        artifacts.update(_plots(ws, encoded, counts))
    value = metrics[primary]
    assert isinstance(value, float)
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
    "classification_f1",
    version="1.0.0",
    task_type="classification",
    description="Macro-averaged F1 over the sorted union of labels, identical to scikit-learn's "
    "f1_score(average='macro'); also per-class, micro and weighted precision/recall/F1.",
    expected_files=EXPECTED_FILES,
    primary_metric="f1_macro",
    params=ClassificationParams,
)
def classification_f1(ws: Workspace, params: ClassificationParams) -> Result:
    return _score(ws, params, "f1_macro", lambda enc, counts: f1_metrics(enc.labels, counts))


@register(
    "classification_accuracy",
    version="1.0.0",
    task_type="classification",
    description="Accuracy (scikit-learn's accuracy_score), balanced accuracy and per-class "
    "accuracy (the fraction of each ground-truth class's rows predicted right).",
    expected_files=EXPECTED_FILES,
    primary_metric="accuracy",
    params=ClassificationParams,
)
def classification_accuracy(ws: Workspace, params: ClassificationParams) -> Result:
    return _score(
        ws,
        params,
        "accuracy",
        lambda enc, counts: accuracy_metrics(enc.labels, counts, len(enc.y_true)),
    )
