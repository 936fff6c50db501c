"""classification_f1 / classification_accuracy give exactly scikit-learn's numbers on random inputs.

Every metric is compared with ``==`` (bit-identical), not with a tolerance. Labels are random
strings (unicode, commas, quotes), some only in the ground truth and some only in the predictions;
prediction rows are shuffled.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from services.scorer.builtin.classification import (
    DENSE_LIMIT,
    SPARSE_LIMIT,
    classification_accuracy,
    classification_f1,
    count,
    f1_metrics,
)
from shared.models import Result
from shared.workspace import Workspace

LABEL_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00")
LABELS = st.text(LABEL_CHARS, min_size=1, max_size=6)
Case = tuple[list[str], list[str], list[int]]


def _csv(ids: list[str], labels: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "label"])
    writer.writerows(zip(ids, labels, strict=True))
    return out.getvalue().encode("utf-8")


def _score(
    root: Path, y_true: list[str], y_pred: list[str], order: list[int], scorer: Any
) -> Result:
    """Write gt in row order, pred rows permuted by ``order``, and score."""
    ids = [f"r{i:03d}" for i in range(len(y_true))]
    (root / "input").mkdir()
    (root / "output").mkdir()
    (root / "input" / "gt.csv").write_bytes(_csv(ids, y_true))
    pred = _csv([ids[i] for i in order], [y_pred[i] for i in order])
    (root / "output" / "pred.csv").write_bytes(pred)
    result: Result = scorer.score(Workspace.at(root), {"plots": False})  # tests/report: plots
    return result


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call sklearn with its default zero_division ("warn"), silencing only that warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        return fn(*args, **kwargs)


def _expected_f1(y_true: list[str], y_pred: list[str]) -> dict[str, Any]:
    yt, yp = np.array(y_true, dtype=object), np.array(y_pred, dtype=object)
    labels = sorted(set(y_true) | set(y_pred))
    expected: dict[str, Any] = {}
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = _quiet(precision_recall_fscore_support, yt, yp, average=average)
        expected |= {f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f}
    p, r, f, s = _quiet(precision_recall_fscore_support, yt, yp, average=None)
    for name, values in (("precision", p), ("recall", r), ("f1", f), ("support", s)):
        per_class = dict(zip(labels, map(float, values), strict=True))
        # listed for ground-truth labels only; pred-only labels are all zeros, and only counted
        assert all(per_class[label] == 0.0 for label in set(y_pred) - set(y_true))
        expected[f"{name}_per_class"] = {label: per_class[label] for label in sorted(set(y_true))}
    expected["n_pred_only_classes"] = float(len(set(y_pred) - set(y_true)))
    return expected


def _check_f1(result: Result, y_true: list[str], y_pred: list[str]) -> None:
    expected = _expected_f1(y_true, y_pred)
    for name, value in expected.items():
        assert result.metrics[name] == value, name
    assert result.summary["f1_macro"] == expected["f1_macro"]
    assert list(result.metrics["f1_per_class"]) == sorted(set(y_true))
    assert result.metrics["n_classes"] == len(set(y_true) | set(y_pred))


def _check_confusion(root: Path, result: Result, y_true: list[str], y_pred: list[str]) -> None:
    artifact = result.artifacts["confusion_matrix"]
    doc = json.loads((root / artifact.path).read_text(encoding="utf-8"))
    assert artifact.size == (root / artifact.path).stat().st_size
    labels = sorted(set(y_true) | set(y_pred))
    assert doc["labels"] == labels
    expected = _quiet(
        confusion_matrix,
        np.array(y_true, dtype=object),
        np.array(y_pred, dtype=object),
        labels=labels,
    )
    assert doc["matrix"] == expected.tolist()


def _check_accuracy(result: Result, y_true: list[str], y_pred: list[str]) -> None:
    yt, yp = np.array(y_true, dtype=object), np.array(y_pred, dtype=object)
    assert result.metrics["accuracy"] == accuracy_score(yt, yp)
    assert result.summary["accuracy"] == accuracy_score(yt, yp)
    assert result.metrics["balanced_accuracy"] == _quiet(balanced_accuracy_score, yt, yp)
    gt_labels = sorted(set(y_true))
    recall = _quiet(precision_recall_fscore_support, yt, yp, labels=gt_labels, average=None)[1]
    per_class = dict(zip(gt_labels, map(float, recall), strict=True))
    assert result.metrics["accuracy_per_class"] == per_class


@st.composite
def cases(draw: st.DrawFn) -> Case:
    pool = draw(st.lists(LABELS, min_size=1, max_size=8, unique=True))
    n = draw(st.integers(1, 40))
    gt_pool = pool[: draw(st.integers(1, len(pool)))]  # the rest can appear only in predictions
    y_true = draw(st.lists(st.sampled_from(gt_pool), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    order = draw(st.permutations(range(n)))
    return y_true, y_pred, order


@settings(max_examples=60, deadline=None)
@given(cases())
def test_f1_matches_sklearn_on_random_labels(case: Case) -> None:
    y_true, y_pred, order = case
    with tempfile.TemporaryDirectory() as tmp:
        result = _score(Path(tmp), y_true, y_pred, order, classification_f1)
        _check_f1(result, y_true, y_pred)
        _check_confusion(Path(tmp), result, y_true, y_pred)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_accuracy_matches_sklearn_on_random_labels(case: Case) -> None:
    y_true, y_pred, order = case
    with tempfile.TemporaryDirectory() as tmp:
        result = _score(Path(tmp), y_true, y_pred, order, classification_accuracy)
        _check_accuracy(result, y_true, y_pred)


@pytest.mark.parametrize("seed", range(4))
def test_medium_random_inputs_match_sklearn(tmp_path: Path, seed: int) -> None:
    """A few thousand rows, dozens of skewed classes: sums and averages over many terms agree."""
    rng = np.random.default_rng(seed)
    n, k = 5000, 60
    names = [f'class {i}, "q" é{i % 7}' for i in range(k)]
    true_codes = rng.zipf(1.3, n) % k
    noisy = rng.random(n) < 0.4
    pred_codes = np.where(noisy, rng.integers(0, k + 5, n), true_codes)  # some labels only in pred
    names += [f"only-pred-{i}" for i in range(5)]
    y_true = [names[c] for c in true_codes]
    y_pred = [names[c] for c in pred_codes]
    order = rng.permutation(n).tolist()
    (tmp_path / "f1").mkdir()
    (tmp_path / "acc").mkdir()
    _check_f1(_score(tmp_path / "f1", y_true, y_pred, order, classification_f1), y_true, y_pred)
    result = _score(tmp_path / "acc", y_true, y_pred, order, classification_accuracy)
    _check_accuracy(result, y_true, y_pred)


def test_single_class_everywhere(tmp_path: Path) -> None:
    y = ["only"] * 7
    result = _score(tmp_path, y, y, list(range(7)), classification_f1)
    _check_f1(result, y, y)
    assert result.metrics["f1_macro"] == 1.0


def test_disjoint_labels_score_zero(tmp_path: Path) -> None:
    y_true, y_pred = ["a", "b", "a"], ["c", "d", "c"]
    result = _score(tmp_path, y_true, y_pred, [2, 0, 1], classification_f1)
    _check_f1(result, y_true, y_pred)
    assert result.metrics["f1_macro"] == 0.0


def test_integer_codes_match_sklearn_on_many_classes() -> None:
    """The counting core alone, on integer codes with many classes and empty ones."""
    rng = np.random.default_rng(7)
    k, n = 3000, 200_000
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, k, n))
    labels = [str(i) for i in range(k)]
    present = np.union1d(y_true, y_pred)
    metrics = f1_metrics(
        [labels[i] for i in present],
        count(np.searchsorted(present, y_true), np.searchsorted(present, y_pred), len(present)),
    )
    p, r, f, _ = _quiet(precision_recall_fscore_support, y_true, y_pred, average="macro")
    assert (metrics["precision_macro"], metrics["recall_macro"], metrics["f1_macro"]) == (p, r, f)


def test_many_classes_write_a_sparse_confusion_matrix(tmp_path: Path) -> None:
    k = DENSE_LIMIT + 1
    y_true = [f"c{i}" for i in range(k)] * 2
    y_pred = [f"c{(i * 7) % k}" for i in range(2 * k)]
    result = _score(tmp_path, y_true, y_pred, list(range(2 * k)), classification_f1)
    doc = json.loads((tmp_path / result.artifacts["confusion_matrix"].path).read_text())
    assert doc["format"] == "coo"
    dense = np.zeros((k, k), dtype=np.int64)
    dense[doc["true"], doc["pred"]] = doc["count"]
    order = np.argsort(doc["labels"])  # sklearn orders labels the same way; check by name
    assert [doc["labels"][i] for i in order] == sorted(set(y_true))
    assert np.array_equal(dense, confusion_matrix(y_true, y_pred, labels=doc["labels"]))


def test_junk_predictions_do_not_bloat_the_result(tmp_path: Path) -> None:
    """Unique junk labels: per-class dicts stay at the gt labels, no confusion matrix is written."""
    n = SPARSE_LIMIT + 10
    y_true = [f"c{i % 3}" for i in range(n)]
    y_pred = [f"junk{i}" for i in range(n)]
    result = _score(tmp_path, y_true, y_pred, list(range(n)), classification_f1)
    assert result.metrics["f1_per_class"] == {"c0": 0.0, "c1": 0.0, "c2": 0.0}
    assert result.metrics["n_pred_only_classes"] == n
    assert result.metrics["f1_macro"] == 0.0
    assert "confusion_matrix" not in result.artifacts
    assert not (tmp_path / "output" / "artifacts" / "confusion_matrix.json").exists()
