"""Multilabel scorers on CSV ``id,labels`` files: each row's labels separated by spaces.

``multilabel_f1_micro``, ``multilabel_f1_macro``, ``multilabel_f1_samples``, ``hamming_loss`` and
``subset_accuracy`` compute the same metric set with different primary metrics. A row's labels
are a set: an empty value is the empty set, runs of spaces separate like one space, a repeated
label counts once. The labels scored are the sorted union of both files' labels (scikit-learn's
``MultiLabelBinarizer`` fitted on both), or the param ``labels``.

No indicator matrix is built: every (row, label) pair is one int64 key ``row * n_labels + label``,
the true positives are the keys found in both files (one ``searchsorted``), and every count per
label or per row is a ``bincount`` of the keys. Precision, recall and F1 then come from the same
expressions as ``classification_f1`` (scikit-learn's ``precision_recall_fscore_support``), so
every value is bit-identical to scikit-learn on the indicator matrices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from services.scorer.builtin.classification import Counts, _prf, encode, f1_metrics
from services.scorer.builtin.probabilities import bad_rows
from services.scorer.builtin.tabular import GT, PRED, Column, CsvFile, IntArray, Pair, read_pair
from services.scorer.builtin.variants import variant
from shared.errors import ErrorCode
from shared.models import MetricValue, Result
from shared.scoring import ScorerDef
from shared.workspace import Workspace

HEADERS = (("id", "labels"),)
EXPECTED_FILES = ("input/gt.csv", "output/pred.csv")


class MultilabelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] | None = Field(
        None,
        min_length=1,
        description="every label there is (a label outside is refused); "
        "default: the labels found in either file. Hamming loss divides by their number.",
    )


@dataclass(frozen=True, slots=True)
class Tokens:
    """One file's (row, label) pairs: ground-truth row numbers and label strings."""

    rows: IntArray
    labels: pa.ChunkedArray


@dataclass(frozen=True, slots=True)
class Keys:
    """Distinct ``row * n_labels + label`` keys, sorted, of both files and of their overlap."""

    true: IntArray
    pred: IntArray
    both: IntArray
    n_rows: int
    n_labels: int


def tokens(column: Column, row_of: IntArray | None) -> Tokens:
    """The non-empty space-separated labels of every row; ``row_of`` maps file rows to gt rows."""
    lists = pc.split_pattern(column.values, pattern=" ")
    flat = pc.list_flatten(lists)
    rows = np.repeat(
        np.arange(len(column.values), dtype=np.int64),
        np.asarray(pc.list_value_length(lists).to_numpy(), dtype=np.int64),
    )
    keep = np.asarray(pc.greater(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False))
    if row_of is not None:
        rows = row_of[rows]
    return Tokens(rows[keep], flat.filter(pa.array(keep)))


def _fixed_codes(
    found: Tokens, labels: list[str], column: Column, source: CsvFile, row_in_file: IntArray | None
) -> IntArray:
    codes = pc.index_in(found.labels, value_set=pa.array(labels, type=pa.string()))
    if codes.null_count:
        bad = np.flatnonzero(np.asarray(pc.is_null(codes).to_numpy(zero_copy_only=False)))
        rows = found.rows[bad] if row_in_file is None else row_in_file[found.rows[bad]]
        raise bad_rows(
            source,
            column.ids,
            rows,
            f"label {found.labels[int(bad[0])].as_py()!r} is not one of the labels in params",
        )
    return np.asarray(codes.to_numpy(), dtype=np.int64)


def read_keys(ws: Workspace, params: MultilabelParams) -> tuple[list[str], Keys]:
    pair = read_pair(ws, HEADERS)
    n = len(pair)
    row_of = row_in_file = None
    if pair.order is not None:  # pred file row -> gt row, and back
        row_of = np.empty(n, dtype=np.int64)
        row_of[pair.order] = np.arange(n, dtype=np.int64)
        row_in_file = pair.order
    true, pred = tokens(pair.gt, None), tokens(pair.pred, row_of)
    if params.labels is None:
        empty = pa.chunked_array([], type=pa.string())
        encoded = encode(
            Pair(
                Column(empty, true.labels, HEADERS[0]), Column(empty, pred.labels, HEADERS[0]), None
            )
        )
        labels, true_codes, pred_codes = encoded.labels, encoded.y_true, encoded.y_pred
    else:
        labels = params.labels
        true_codes = _fixed_codes(true, labels, pair.gt, GT, None)
        pred_codes = _fixed_codes(pred, labels, pair.pred, PRED, row_in_file)
    return labels, keys_of(
        true.rows, true_codes, pred.rows, pred_codes, n_rows=n, n_labels=len(labels)
    )


def _distinct(keys: IntArray) -> IntArray:
    """Sorted distinct keys (``np.sort`` and a neighbour test: faster than ``np.unique``)."""
    ordered: IntArray = np.sort(keys)
    if len(ordered) < 2:
        return ordered
    first = np.ones(len(ordered), dtype=np.bool_)
    first[1:] = ordered[1:] != ordered[:-1]
    distinct: IntArray = ordered[first]
    return distinct


def keys_of(
    true_rows: IntArray,
    true_codes: IntArray,
    pred_rows: IntArray,
    pred_codes: IntArray,
    *,
    n_rows: int,
    n_labels: int,
) -> Keys:
    width = max(n_labels, 1)
    true_keys = _distinct(true_rows * width + true_codes)
    pred_keys = _distinct(pred_rows * width + pred_codes)
    at = np.minimum(np.searchsorted(true_keys, pred_keys), max(len(true_keys) - 1, 0))
    both = pred_keys[true_keys[at] == pred_keys] if len(true_keys) else true_keys
    return Keys(true_keys, pred_keys, both, n_rows, n_labels)


def multilabel_metrics(labels: list[str], keys: Keys) -> dict[str, MetricValue]:
    """Needs at least one ground-truth label (else the weighted averages divide by zero)."""
    width = keys.n_labels
    per_label = Counts(
        *(
            np.bincount(k % width, minlength=keys.n_labels)
            for k in (keys.both, keys.true, keys.pred)
        )
    )
    metrics = f1_metrics(labels, per_label)
    per_row = [
        np.bincount(k // width, minlength=keys.n_rows) for k in (keys.both, keys.true, keys.pred)
    ]
    for name, values in zip(("precision", "recall", "f1"), _prf(*per_row), strict=True):
        metrics[f"{name}_samples"] = float(np.average(values))
    differences = len(keys.true) + len(keys.pred) - 2 * len(keys.both)
    metrics["hamming_loss"] = float(differences) / (keys.n_rows * keys.n_labels * 1.0)
    tp, true_sum, pred_sum = per_row
    metrics["subset_accuracy"] = float(np.average((tp == true_sum) & (tp == pred_sum)))
    metrics.pop("n_pred_only_classes", None)
    metrics["n_pred_only_labels"] = float(np.count_nonzero(per_label.true_sum == 0))
    return metrics


def _score(ws: Workspace, params: MultilabelParams, primary: str) -> Result:
    started = time.perf_counter()
    labels, keys = read_keys(ws, params)
    if not len(keys.true):
        raise GT.error(
            ErrorCode.BAD_FORMAT, "no row has a label: nothing to score", rows=keys.n_rows
        )
    read_s = time.perf_counter() - started
    metrics = multilabel_metrics(labels, keys)
    metrics["n_samples"] = float(keys.n_rows)
    metrics["n_labels"] = float(keys.n_labels)
    value = metrics[primary]
    assert isinstance(value, float)
    return Result(
        summary={primary: value, "score": value},
        metrics=metrics,
        timing={"read_s": read_s, "metrics_s": time.perf_counter() - started - read_s},
    )


def _scorer(
    name: str, primary: str, what: str, higher_is_better: bool = True
) -> ScorerDef[MultilabelParams]:
    return variant(
        _score,
        MultilabelParams,
        name=name,
        primary=primary,
        task_type="multilabel",
        description=what + " CSV id,labels with space-separated labels; also micro, "
        "macro, weighted and samples precision/recall/F1, Hamming loss and subset "
        "accuracy, identical to scikit-learn.",
        expected_files=EXPECTED_FILES,
        higher_is_better=higher_is_better,
    )


multilabel_f1_micro = _scorer(
    "multilabel_f1_micro", "f1_micro", "Micro-averaged F1 over all (row, label) decisions."
)
multilabel_f1_macro = _scorer(
    "multilabel_f1_macro", "f1_macro", "Macro-averaged F1: the mean of the per-label F1s."
)
multilabel_f1_samples = _scorer(
    "multilabel_f1_samples", "f1_samples", "Samples-averaged F1: the mean of the per-row F1s."
)
hamming_loss = _scorer(
    "hamming_loss",
    "hamming_loss",
    "Hamming loss: the fraction of (row, label) decisions that are wrong.",
    higher_is_better=False,
)
subset_accuracy = _scorer(
    "subset_accuracy",
    "subset_accuracy",
    "Subset accuracy: the fraction of rows whose label set is exactly right.",
)
