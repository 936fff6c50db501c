"""Scorers of predicted class probabilities: ``roc_auc``, ``average_precision``, ``log_loss``,
``brier_score`` (one metric set, four primary metrics), on ``id,label`` ground truth and an
``id,<class 1>,<class 2>,...`` prediction file with one probability column per class.

Every metric repeats scikit-learn's own arithmetic on the same numbers, so the values are
bit-identical, not merely close (the tests compare with ``==``). The speed comes from sharing and
from cheaper sorting, not from other formulas: scikit-learn sorts each class's scores twice (ROC
and precision-recall curves) with a stable argsort; here one ``np.sort`` of int64 keys per class
serves both curves. A probability in [0, 1] is a non-negative float, whose IEEE bits order like
the number, so ``bits << 1 | is_positive`` sorts the scores and carries each row's label along.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from services.scorer.builtin.regression import to_floats
from services.scorer.builtin.tabular import (
    EXAMPLES,
    GT,
    PRED,
    Column,
    CsvFile,
    IntArray,
    align,
    read_column,
    read_header,
    read_table,
    refuse_empty_values,
)
from services.scorer.builtin.variants import variant
from shared.errors import AutoscorerError, ErrorCode
from shared.models import MetricValue, Result
from shared.scoring import ScorerDef
from shared.workspace import Workspace

GT_HEADERS = (("id", "label"),)
EXPECTED_FILES = ("input/gt.csv", "output/pred.csv")
PRED_EXPECTED = "id,<one column per class>"

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class ScoreParams(BaseModel):
    """What every scorer of per-class scores takes."""

    model_config = ConfigDict(extra="forbid")

    classes: list[str] | None = Field(
        None,
        min_length=2,
        description="the class columns pred.csv must have (any order); default: the columns "
        "it has, which must include every ground-truth label",
    )


class ProbabilityParams(ScoreParams):
    positive_class: str | None = Field(
        None,
        description="with two classes, the one whose probability ROC AUC and average precision "
        "rank by; default: the class of the only probability column if there is one, else the "
        "greater label in sorted order, as scikit-learn",
    )
    sum_tolerance: float | None = Field(
        1e-5,
        ge=0,
        description="refuse a row whose probabilities sum to further than this from 1 "
        "(null: do not check)",
    )


@dataclass(frozen=True, slots=True)
class Scores:
    """Classes in sorted order; each gt row's class index and its scores in that order."""

    classes: list[str]
    y_true: IntArray
    scores: FloatArray  # (n_rows, n_classes), gt row order
    single_column: str | None = None  # binary, given as this class's column only


def read_scores(
    ws: Workspace, params: ScoreParams, probabilities: bool, sum_tolerance: float | None = None
) -> Scores:
    gt = read_column(ws, GT, GT_HEADERS)
    refuse_empty_values(gt, GT)
    header = _class_header(
        read_header(ws, PRED, PRED_EXPECTED), params.classes, 1 if probabilities else 2
    )
    table, _ = read_table(ws, PRED, [header])
    ids = table.column(0)
    refuse_empty_values(Column(ids, ids, ("id", "id")), PRED)
    order = align(gt.ids, ids)
    single = header[1] if len(header) == 2 else None
    classes = sorted(header[1:]) if single is None else _binary_classes(gt, single, params.classes)
    position = {name: j for j, name in enumerate(header)}
    scores = np.empty((len(ids), len(classes)), dtype=np.float64)
    for k, name in enumerate(classes):
        if name in position:
            scores[:, k] = to_floats(Column(ids, table.column(position[name]), ("id", name)), PRED)
    if single is not None:  # the other class's probability, as scikit-learn's 1 - y_prob
        given = classes.index(single)
        _check_probabilities(scores[:, [given]], ids, [single], None)
        scores[:, 1 - given] = 1 - scores[:, given]
    elif probabilities:
        _check_probabilities(scores, ids, classes, sum_tolerance)
    y_true = _class_codes(gt, classes, params.classes is not None)
    return Scores(classes, y_true, scores if order is None else scores[order], single)


def _binary_classes(gt: Column, single: str, fixed: list[str] | None) -> list[str]:
    """The two classes of a file with one probability column: ``fixed``, or the ground-truth
    labels with the column's class."""
    found = sorted(fixed or set(pc.unique(gt.values).to_pylist()) | {single})
    if len(found) == 2:
        return found
    raise PRED.error(
        ErrorCode.BAD_FORMAT,
        f"one probability column ({single!r}) is enough for two classes only, and "
        f"{'the classes param' if fixed else 'the ground truth with it'} has {len(found)}: "
        f"give {PRED_EXPECTED}" + ("" if fixed else " (or set the param classes)"),
        classes=found[:EXAMPLES],
    )


def _class_header(found: Sequence[str], classes: list[str] | None, minimum: int) -> tuple[str, ...]:
    """``id`` and then at least ``minimum`` distinct, non-empty class names (``classes`` if
    given; one column of ``classes`` if it is the only one)."""
    names = list(found[1:])
    problem = None
    if not found or found[0] != "id":
        problem = "its first column must be id"
    elif len(names) < minimum:
        problem = f"it needs one column per class, at least {minimum}"
    elif any(not name for name in names):
        problem = "a class column has an empty name"
    elif len(set(names)) != len(names):
        problem = f"class columns repeat: {sorted({n for n in names if names.count(n) > 1})[:5]}"
    elif (
        classes is not None
        and set(names) != set(classes)
        and not (len(names) == 1 and names[0] in classes)
    ):
        missing = sorted(set(classes) - set(names))[:EXAMPLES]
        extra = sorted(set(names) - set(classes))[:EXAMPLES]
        problem = f"its class columns must be {classes}: missing {missing}, unknown {extra}"
    if problem is None:
        return tuple(found)
    raise PRED.error(
        ErrorCode.BAD_FORMAT,
        f"header must be {PRED_EXPECTED}; {problem}",
        expected=PRED_EXPECTED,
        found=[name[:100] for name in found[:10]],
    )


def _check_probabilities(
    scores: FloatArray, ids: pa.ChunkedArray, classes: list[str], tolerance: float | None
) -> None:
    outside = (scores < 0) | (scores > 1)
    bad = np.flatnonzero(outside.any(axis=1))
    if len(bad):
        column = classes[int(np.argmax(outside[bad[0]]))]
        value = float(scores[bad[0], classes.index(column)])
        raise _bad_rows(
            ids, bad, f"probability {value!r} of class {column!r} is not in [0, 1]", column=column
        )
    if tolerance is not None:
        sums = scores.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > tolerance)
        if len(bad):
            raise _bad_rows(
                ids,
                bad,
                f"probabilities sum to {float(sums[bad[0]])!r}, not 1 (tolerance {tolerance!r})",
                sums=sums[bad[:EXAMPLES]].tolist(),
            )


def _bad_rows(ids: pa.ChunkedArray, rows: IntArray, problem: str, **details: object) -> Exception:
    return bad_rows(PRED, ids, rows, problem, **details)


def bad_rows(
    source: CsvFile, ids: pa.ChunkedArray, rows: IntArray, problem: str, **details: object
) -> AutoscorerError:
    """BAD_FORMAT naming the first offending rows (0-based ``rows``, shown 1-based) and ids."""
    shown = [int(i) for i in rows[:EXAMPLES]]
    names = [ids[i].as_py() for i in shown]
    return source.error(
        ErrorCode.BAD_FORMAT,
        f"row {shown[0] + 1} (id {names[0]!r}): {problem}; {len(rows)} such rows",
        rows=[i + 1 for i in shown],
        ids=names,
        row_count=len(rows),
        **details,
    )


def _class_codes(gt: Column, classes: list[str], fixed: bool) -> IntArray:
    """Each gt label's class index; a label without a class column is an error, the
    organiser's if the classes were fixed by params, else the participant's (a missing column)."""
    codes = pc.index_in(gt.values, value_set=pa.array(classes, type=pa.string()))
    if codes.null_count == 0:
        return np.asarray(codes.to_numpy(), dtype=np.int64)
    missing = np.flatnonzero(np.asarray(pc.is_null(codes).to_numpy(zero_copy_only=False)))
    rows = [int(i) for i in missing[:EXAMPLES]]
    labels = [gt.values[i].as_py() for i in rows]
    message = f"ground-truth label {labels[0]!r} (row {rows[0] + 1} of {GT.relative}) "
    if fixed:
        raise GT.error(
            ErrorCode.BAD_FORMAT,
            message + "is not one of the classes in params",
            rows=[i + 1 for i in rows],
            labels=labels,
        )
    raise PRED.error(
        ErrorCode.BAD_FORMAT,
        message + "has no probability column",
        gt_rows=[i + 1 for i in rows],
        labels=labels,
    )


# --- curves: scikit-learn's confusion_matrix_at_thresholds, roc_curve, precision_recall_curve --


def curve_counts(score: FloatArray, positive: BoolArray) -> tuple[FloatArray, FloatArray]:
    """True and false positives at each distinct score, highest first (sklearn's tps, fps).

    ``score`` must lie in [0, 1] (no NaN): adding 0.0 turns -0.0 into 0.0, and the bits of
    non-negative floats order like the floats, so one int64 sort orders scores and labels.
    """
    bits = (score + 0.0).view(np.int64)
    keys = np.sort((bits << 1) | positive.astype(np.int64))[::-1]
    values = keys >> 1
    threshold_idxs = np.append(np.flatnonzero(values[1:] != values[:-1]), len(keys) - 1)
    tps = np.cumsum(keys & 1)[threshold_idxs].astype(np.float64)
    fps = 1 + threshold_idxs.astype(np.float64) - tps
    return tps, fps


def roc_auc_from_counts(tps: FloatArray, fps: FloatArray) -> float:
    """``auc(*roc_curve(...)[:2])`` with ``drop_intermediate=True``; needs both classes."""
    if fps.shape[0] > 2:
        corners = np.logical_or(np.diff(fps, 2), np.diff(tps, 2))
        keep = np.flatnonzero(np.concatenate([[True], corners, [True]]))
        fps, tps = fps[keep], tps[keep]
    tps = np.concatenate([[0.0], tps])
    fps = np.concatenate([[0.0], fps])
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


def average_precision_from_counts(tps: FloatArray, fps: FloatArray) -> float:
    """``average_precision_score`` of one class: the step-wise area under precision-recall."""
    precision = np.concatenate((np.flip(tps / (tps + fps)), [1.0]))
    recall = np.concatenate((np.flip(tps / tps[-1]), [0.0]))
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


@dataclass(frozen=True, slots=True)
class Ranked:
    """Per class (sorted order): ROC AUC (NaN where undefined), AP (NaN without positives)."""

    roc_auc: FloatArray
    average_precision: FloatArray
    positives: IntArray


def ranked(y_true: IntArray, scores: FloatArray, columns: Sequence[int]) -> Ranked:
    n = len(y_true)
    positives = np.bincount(y_true, minlength=scores.shape[1])[list(columns)]
    roc = np.full(len(columns), np.nan)
    ap = np.full(len(columns), np.nan)
    for i, column in enumerate(columns):
        if positives[i] == 0:
            continue
        tps, fps = curve_counts(scores[:, column], y_true == column)
        ap[i] = average_precision_from_counts(tps, fps)
        if positives[i] < n:
            roc[i] = roc_auc_from_counts(tps, fps)
    return Ranked(roc, ap, positives)


# --- metrics --------------------------------------------------------------------------------


def log_loss(y_true: IntArray, proba: FloatArray) -> float:
    """``sklearn.metrics.log_loss(labels=classes)``: probabilities clipped to [eps, 1 - eps]."""
    eps = np.finfo(proba.dtype).eps
    picked = np.clip(proba[np.arange(len(y_true)), y_true], eps, 1 - eps)
    return float(np.average(-np.log(picked)))


def brier_score(y_true: IntArray, proba: FloatArray) -> float:
    """``brier_score_loss(labels=classes)``: mean over rows of the summed squared error against
    the one-hot truth, halved for two classes (its ``scale_by_half="auto"``)."""
    one_hot = np.zeros_like(proba)
    one_hot[np.arange(len(y_true)), y_true] = 1.0
    score = float(np.average(np.sum((one_hot - proba) ** 2, axis=1)))
    return score * 0.5 if proba.shape[1] < 3 else score


def _positive(classes: list[str], chosen: str | None) -> int:
    if chosen is None:
        return 1
    if chosen not in classes:
        raise PRED.error(
            ErrorCode.BAD_FORMAT,
            f"positive_class {chosen!r} is not one of the class columns {classes}",
            classes=classes,
        )
    return classes.index(chosen)


def _per_class(classes: list[str], columns: Sequence[int], values: FloatArray) -> dict[str, float]:
    return {classes[c]: float(v) for c, v in zip(columns, values, strict=True) if not np.isnan(v)}


def probability_metrics(data: Scores, positive_class: str | None = None) -> dict[str, MetricValue]:
    """Log loss and Brier score always; ROC AUC and average precision where defined.

    Two classes: the binary metrics of the positive class. More: one-vs-rest per class, macro
    and weighted (by positives) averages over the classes for which the metric is defined (a
    class absent from the ground truth has neither; one on every row has no ROC AUC).
    """
    y_true, proba, classes = data.y_true, data.scores, data.classes
    metrics: dict[str, MetricValue] = {
        "log_loss": log_loss(y_true, proba),
        "brier_score": brier_score(y_true, proba),
    }
    if len(classes) == 2:
        column = _positive(classes, positive_class)
        result = ranked(y_true, proba, [column])
        if not np.isnan(result.roc_auc[0]):
            metrics["roc_auc"] = float(result.roc_auc[0])
        if not np.isnan(result.average_precision[0]):
            metrics["average_precision"] = float(result.average_precision[0])
        return metrics
    columns = list(range(len(classes)))
    result = ranked(y_true, proba, columns)
    for name, values in (
        ("roc_auc", result.roc_auc),
        ("average_precision", result.average_precision),
    ):
        defined = ~np.isnan(values)
        if not defined.any():
            continue
        macro = float(np.average(values[defined]))
        metrics[name] = macro
        metrics[f"{name}_macro"] = macro
        metrics[f"{name}_weighted"] = float(
            np.average(values[defined], weights=result.positives[defined])
        )
        metrics[f"{name}_per_class"] = _per_class(classes, columns, values)
    metrics["n_classes_absent"] = float(np.count_nonzero(result.positives == 0))
    return metrics


def _score(ws: Workspace, params: ProbabilityParams, primary: str) -> Result:
    started = time.perf_counter()
    data = read_scores(ws, params, True, params.sum_tolerance)
    read_s = time.perf_counter() - started
    metrics = probability_metrics(data, params.positive_class or data.single_column)
    metrics["n_samples"] = float(len(data.y_true))
    metrics["n_classes"] = float(len(data.classes))
    value = metrics.get(primary)
    if not isinstance(value, float):
        raise GT.error(
            ErrorCode.BAD_FORMAT,
            f"{primary} is undefined: the ground truth needs rows of the positive "
            "class and of another class",
            metric=primary,
        )
    return Result(
        summary={primary: value, "score": value},
        metrics=metrics,
        timing={"read_s": read_s, "metrics_s": time.perf_counter() - started - read_s},
    )


_DESCRIPTION = (
    " Ground truth id,label; predictions id,<class>,... with one probability column "
    "per class. Also reports ROC AUC (binary, or one-vs-rest macro/weighted), average "
    "precision, log loss and Brier score, identical to scikit-learn."
)


def _scorer(name: str, what: str, higher_is_better: bool = True) -> ScorerDef[ProbabilityParams]:
    """One scorer per primary metric: all four compute the same metrics."""
    return variant(
        _score,
        ProbabilityParams,
        name=name,
        primary=name,
        task_type="classification",
        description=what + _DESCRIPTION,
        expected_files=EXPECTED_FILES,
        higher_is_better=higher_is_better,
    )


roc_auc = _scorer(
    "roc_auc",
    "Area under the ROC curve: binary, or the one-vs-rest macro average for more than two classes.",
)
average_precision = _scorer(
    "average_precision",
    "Average precision (the step-wise area under the precision-recall "
    "curve): binary, or the one-vs-rest macro average.",
)
log_loss_scorer = _scorer(
    "log_loss", "Log loss (cross-entropy) of the predicted probabilities.", higher_is_better=False
)
brier_score_scorer = _scorer(
    "brier_score",
    "Brier score: the mean squared error of the probabilities against the one-hot "
    "truth (halved for two classes, as scikit-learn).",
    higher_is_better=False,
)
