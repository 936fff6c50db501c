"""roc_auc / average_precision / log_loss / brier_score give exactly scikit-learn's numbers.

Every metric is compared with ``==`` (bit-identical). Probabilities are written with ``repr`` so
the files hold exactly the floats scikit-learn sees; prediction rows and class columns are
shuffled. Bad inputs end in the standard errors, naming the file and the rows.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from services.scorer.builtin.probabilities import average_precision, brier_score_scorer, roc_auc
from services.scorer.builtin.probabilities import log_loss_scorer as log_loss_def
from shared.errors import AutoscorerError, ErrorCode, Fault
from shared.models import Result
from shared.workspace import Workspace


def write(
    root: Path,
    labels: list[str],
    proba: np.ndarray,
    classes: list[str],
    order: list[int] | None = None,
    columns: list[int] | None = None,
) -> Workspace:
    """gt in row order; pred rows permuted by ``order``, class columns by ``columns``."""
    n = len(labels)
    order = list(range(n)) if order is None else order
    columns = list(range(len(classes))) if columns is None else columns
    ids = [f"r{i:04d}" for i in range(n)]
    (root / "input").mkdir(exist_ok=True)
    (root / "output").mkdir(exist_ok=True)
    gt = "".join(f"{ids[i]},{labels[i]}\n" for i in range(n))
    (root / "input" / "gt.csv").write_text("id,label\n" + gt)
    header = ",".join(["id"] + [classes[c] for c in columns])
    body = "".join(
        ",".join([ids[i]] + [repr(float(proba[i, c])) for c in columns]) + "\n" for i in order
    )
    (root / "output" / "pred.csv").write_text(header + "\n" + body)
    return Workspace.at(root)


def expected(labels: list[str], proba: np.ndarray, classes: list[str]) -> dict[str, float]:
    y = np.asarray(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = {
            "log_loss": log_loss(y, proba, labels=classes),
            "brier_score": brier_score_loss(y, proba, labels=classes),
        }
    present = sorted(set(labels))
    if len(classes) == 2:
        if len(present) == 2:
            values["roc_auc"] = roc_auc_score(y, proba[:, 1])
        if classes[1] in present:
            values["average_precision"] = average_precision_score(
                y, proba[:, 1], pos_label=classes[1]
            )
    elif present == classes:
        values["roc_auc"] = roc_auc_score(y, proba, multi_class="ovr")
        values["roc_auc_weighted"] = roc_auc_score(y, proba, multi_class="ovr", average="weighted")
        values["average_precision"] = average_precision_score(y, proba)
        values["average_precision_weighted"] = average_precision_score(y, proba, average="weighted")
    return values


def check(result: Result, labels: list[str], proba: np.ndarray, classes: list[str]) -> None:
    for name, value in expected(labels, proba, classes).items():
        assert result.metrics[name] == value, name
    assert result.metrics["n_samples"] == len(labels)


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[str], np.ndarray, list[str], list[int], list[int]]:
    k = draw(st.integers(2, 5))
    classes = sorted(
        draw(
            st.lists(
                st.text("abcxyzé", min_size=1, max_size=3), min_size=k, max_size=k, unique=True
            )
        )
    )
    n = draw(st.integers(k, 40))
    codes = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    codes[:k] = range(k)  # every class present: scikit-learn's multiclass metrics need that
    grid = draw(st.sampled_from([2, 4, 10, 1000]))  # coarse grids make ties and exact 0s and 1s
    raw = np.array(
        draw(st.lists(st.integers(0, grid), min_size=n * k, max_size=n * k)), dtype=np.float64
    ).reshape(n, k)
    raw[:, 0] += 0.5  # no all-zero row
    proba = raw / raw.sum(axis=1, keepdims=True)
    return (
        [classes[c] for c in codes],
        proba,
        classes,
        draw(st.permutations(range(n))),
        draw(st.permutations(range(k))),
    )


@settings(max_examples=80, deadline=None)
@given(cases())
def test_metrics_match_sklearn(
    case: tuple[list[str], np.ndarray, list[str], list[int], list[int]],
) -> None:
    labels, proba, classes, order, columns = case
    with tempfile.TemporaryDirectory() as tmp:
        ws = write(Path(tmp), labels, proba, classes, order, columns)
        result = roc_auc.score(ws, {})
    check(result, labels, proba, classes)
    assert result.summary["score"] == result.metrics["roc_auc"]


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (2, 1), (3, 2), (7, 3)])
def test_medium_random_inputs_match_sklearn(tmp_path: Path, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    codes = rng.integers(0, k, n)
    raw = rng.random((n, k))
    raw[np.arange(n), codes] += rng.random(n)
    proba = np.round(raw / raw.sum(axis=1, keepdims=True), 2) + 0.001
    proba /= proba.sum(axis=1, keepdims=True)
    classes = [f"class {i}" for i in range(k)]
    labels = [classes[c] for c in codes]
    ws = write(tmp_path, labels, proba, classes, rng.permutation(n).tolist())
    for scorer, primary in (
        (roc_auc, "roc_auc"),
        (average_precision, "average_precision"),
        (log_loss_def, "log_loss"),
        (brier_score_scorer, "brier_score"),
    ):
        result = scorer.score(ws, {})
        check(result, labels, proba, classes)
        assert result.summary["score"] == result.metrics[primary]


def test_log_loss_clips_zero_and_one_as_sklearn(tmp_path: Path) -> None:
    classes = ["a", "b", "c"]
    labels = ["a", "b", "c", "a"]
    proba = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    result = log_loss_def.score(write(tmp_path, labels, proba, classes), {})
    check(result, labels, proba, classes)
    assert result.metrics["log_loss"] > 10  # -log(eps) for the two certain mistakes


def test_binary_positive_class_param(tmp_path: Path) -> None:
    labels = ["no", "yes", "yes", "no", "yes"]
    p_yes = np.array([0.2, 0.9, 0.4, 0.4, 0.7])
    proba = np.column_stack([1 - p_yes, p_yes])
    ws = write(tmp_path, labels, proba, ["no", "yes"])
    result = roc_auc.score(ws, {})
    assert result.metrics["roc_auc"] == roc_auc_score(labels, p_yes)
    flipped = roc_auc.score(ws, {"positive_class": "no"})
    is_no = np.asarray(labels) == "no"
    assert flipped.metrics["roc_auc"] == roc_auc_score(is_no, 1 - p_yes)
    assert flipped.metrics["average_precision"] == average_precision_score(
        labels, 1 - p_yes, pos_label="no"
    )


def test_class_absent_from_ground_truth_is_left_out_of_the_averages(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    classes = ["a", "b", "c", "d"]
    codes = rng.integers(0, 3, 200)  # "d" never true
    proba = rng.random((200, 4))
    proba /= proba.sum(axis=1, keepdims=True)
    labels = [classes[c] for c in codes]
    result = roc_auc.score(write(tmp_path, labels, proba, classes), {})
    per_class = {
        c: roc_auc_score(np.asarray(labels) == c, proba[:, i]) for i, c in enumerate(classes[:3])
    }
    assert result.metrics["roc_auc_per_class"] == per_class
    assert result.metrics["roc_auc"] == float(np.average(list(per_class.values())))
    assert result.metrics["n_classes_absent"] == 1.0
    check(result, labels, proba, classes)  # log loss and Brier still exact


def test_single_class_ground_truth(tmp_path: Path) -> None:
    """ROC AUC is undefined: the roc_auc scorer blames the ground truth; log loss still works."""
    labels = ["a"] * 5
    proba = np.array([[0.9, 0.1]] * 5)
    ws = write(tmp_path, labels, proba, ["a", "b"])
    with pytest.raises(AutoscorerError) as info:
        roc_auc.score(ws, {})
    assert info.value.code == ErrorCode.BAD_FORMAT and info.value.fault == Fault.ORGANISER
    result = log_loss_def.score(ws, {})
    check(result, labels, proba, ["a", "b"])
    assert "roc_auc" not in result.metrics


def _error(root: Path, gt: str, pred: str, params: dict[str, Any] | None = None) -> AutoscorerError:
    (root / "input").mkdir(exist_ok=True)
    (root / "output").mkdir(exist_ok=True)
    (root / "input" / "gt.csv").write_text(gt)
    (root / "output" / "pred.csv").write_text(pred)
    with pytest.raises(AutoscorerError) as info:
        roc_auc.score(Workspace.at(root), params or {})
    return info.value


GT = "id,label\n1,a\n2,b\n3,a\n"


@pytest.mark.parametrize(
    ("pred", "code", "detail"),
    [
        ("id,a,b\n1,0.5,0.5\n2,0.5,0.5\n", ErrorCode.MISMATCH, {"missing": ["3"]}),
        (
            "id,a,b\n1,0.5,0.5\n2,0.5,0.5\n3,0.5,0.5\n4,0.5,0.5\n",
            ErrorCode.MISMATCH,
            {"extra": ["4"]},
        ),
        ("id,a,b\n1,0.5,0.5\n2,0.5,0.5\n2,0.5,0.5\n", ErrorCode.BAD_FORMAT, {"duplicates": ["2"]}),
        (
            "id,a,b\n1,0.5,0.5\n2,1.5,-0.5\n3,0.5,0.5\n",
            ErrorCode.BAD_FORMAT,
            {"rows": [2], "ids": ["2"], "column": "a"},
        ),
        ("id,a,b\n1,0.5,0.5\n2,0.5,0.4\n3,0.5,0.5\n", ErrorCode.BAD_FORMAT, {"rows": [2]}),
        ("id,a,b\n1,0.5,0.5\n2,nan,0.5\n3,0.5,0.5\n", ErrorCode.BAD_FORMAT, {"rows": [2]}),
        ("id,a,b\n1,0.5,0.5\n2,x,0.5\n3,0.5,0.5\n", ErrorCode.BAD_FORMAT, {"rows": [2]}),
        ("id,a,b\n1,0.5,0.5\n2,0.5\n3,0.5,0.5\n", ErrorCode.PARSE_ERROR, {}),
        ("id\n1\n2\n3\n", ErrorCode.BAD_FORMAT, {}),
        ("id,a,a\n1,0.5,0.5\n2,0.5,0.5\n3,0.5,0.5\n", ErrorCode.BAD_FORMAT, {}),
        ("key,a,b\n1,0.5,0.5\n2,0.5,0.5\n3,0.5,0.5\n", ErrorCode.BAD_FORMAT, {}),
        ("id,a,c\n1,0.5,0.5\n2,0.5,0.5\n3,0.5,0.5\n", ErrorCode.BAD_FORMAT, {"gt_rows": [2]}),
        ("", ErrorCode.BAD_FORMAT, {}),
    ],
)
def test_bad_predictions_are_standard_errors(
    tmp_path: Path, pred: str, code: ErrorCode, detail: dict[str, Any]
) -> None:
    error = _error(tmp_path, GT, pred)
    assert error.code == code
    assert error.fault == Fault.PARTICIPANT
    if code != ErrorCode.MISMATCH:
        assert error.details["file"] == "pred"
    for key, value in detail.items():
        assert error.details[key] == value, key


def test_classes_param_fixes_the_columns(tmp_path: Path) -> None:
    pred = "id,b,a\n1,0.5,0.5\n2,0.5,0.5\n3,0.5,0.5\n"
    error = _error(tmp_path, GT, pred, {"classes": ["a", "b", "c"]})
    assert error.code == ErrorCode.BAD_FORMAT and "missing ['c']" in error.message
    error = _error(tmp_path, "id,label\n1,a\n2,z\n3,b\n", pred, {"classes": ["a", "b"]})
    assert error.fault == Fault.ORGANISER and error.details["labels"] == ["z"]


def test_unknown_params_are_refused(tmp_path: Path) -> None:
    error = _error(tmp_path, GT, "id,a,b\n1,1,0\n2,0,1\n3,1,0\n", {"average": "micro"})
    assert error.code == ErrorCode.BAD_PARAMS


def test_sum_check_can_be_turned_off(tmp_path: Path) -> None:
    ws = write(tmp_path, ["a", "b"], np.array([[0.3, 0.3], [0.1, 0.6]]), ["a", "b"])
    result = roc_auc.score(ws, {"sum_tolerance": None})
    assert result.metrics["roc_auc"] == 1.0


def _single_column(root: Path, labels: list[str], column: str, p: np.ndarray) -> Workspace:
    (root / "input").mkdir(exist_ok=True)
    (root / "output").mkdir(exist_ok=True)
    ids = [f"r{i}" for i in range(len(labels))]
    (root / "input" / "gt.csv").write_text(
        "id,label\n" + "".join(f"{i},{y}\n" for i, y in zip(ids, labels, strict=True))
    )
    (root / "output" / "pred.csv").write_text(
        f"id,{column}\n" + "".join(f"{i},{v!r}\n" for i, v in zip(ids, p.tolist(), strict=True))
    )
    return Workspace.at(root)


@pytest.mark.parametrize("seed", range(3))
def test_binary_as_one_probability_column(tmp_path: Path, seed: int) -> None:
    """``id,1`` holding P(label "1"): scikit-learn's 1-D y_prob, the positive class the column's."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(["0", "1"], 500).tolist()
    p = np.round(rng.random(500), 2)
    p[:3] = [0.0, 1.0, 0.5]
    result = roc_auc.score(_single_column(tmp_path, labels, "1", p), {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert result.metrics["roc_auc"] == roc_auc_score(labels, p)
        assert result.metrics["average_precision"] == average_precision_score(
            labels, p, pos_label="1"
        )
        assert result.metrics["log_loss"] == log_loss(labels, p)
        assert result.metrics["brier_score"] == brier_score_loss(labels, p, pos_label="1")
    assert result.metrics["n_classes"] == 2.0


def test_one_column_of_the_lesser_label_is_its_positive_class(tmp_path: Path) -> None:
    labels = ["cat", "dog", "cat", "dog", "cat"]
    p_cat = np.array([0.9, 0.2, 0.6, 0.7, 0.4])
    result = roc_auc.score(_single_column(tmp_path, labels, "cat", p_cat), {})
    is_cat = np.asarray(labels) == "cat"
    assert result.metrics["roc_auc"] == roc_auc_score(is_cat, p_cat)
    proba = np.column_stack([p_cat, 1 - p_cat])
    assert result.metrics["log_loss"] == log_loss(labels, proba, labels=["cat", "dog"])


def test_one_column_needs_exactly_two_classes(tmp_path: Path) -> None:
    ws = _single_column(tmp_path, ["a", "b", "c"], "a", np.array([0.5, 0.5, 0.5]))
    with pytest.raises(AutoscorerError) as info:
        roc_auc.score(ws, {})
    assert info.value.code == ErrorCode.BAD_FORMAT and info.value.fault == Fault.PARTICIPANT
    ws = _single_column(tmp_path, ["a", "a"], "a", np.array([0.5, 0.5]))
    assert log_loss_def.score(ws, {"classes": ["a", "b"]}).metrics["n_classes"] == 2.0
    with pytest.raises(AutoscorerError):  # one class known: the other is unknown
        log_loss_def.score(ws, {})
    ws = _single_column(tmp_path, ["a", "b"], "a", np.array([1.5, 0.5]))
    with pytest.raises(AutoscorerError) as info:
        roc_auc.score(ws, {})
    assert info.value.details["rows"] == [1] and info.value.details["column"] == "a"


@settings(max_examples=60, deadline=None)
@given(case=cases(), keep=st.integers(1, 4))
def test_absent_classes_average_over_the_defined_ones(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[list[str], np.ndarray, list[str], list[int], list[int]],
    keep: int,
) -> None:
    """Ground truth drawn from the first ``keep`` classes only: per class, ROC AUC and AP are
    scikit-learn's binary values where defined, and the macro average is their mean."""
    labels, proba, classes, order, columns = case
    if len(classes) < 3:
        return
    present = classes[:keep]
    labels = [label if label in present else present[0] for label in labels]
    result = log_loss_def.score(
        write(tmp_path_factory.mktemp("case"), labels, proba, classes, order, columns), {}
    )  # ROC AUC may be undefined
    truth = np.asarray(labels)
    expected_roc, expected_ap = {}, {}
    for k, name in enumerate(classes):
        positive = truth == name
        if positive.any():
            expected_ap[name] = average_precision_score(positive, proba[:, k])
            if not positive.all():
                expected_roc[name] = roc_auc_score(positive, proba[:, k])
    assert result.metrics.get("roc_auc_per_class", {}) == expected_roc
    assert result.metrics["average_precision_per_class"] == expected_ap
    if expected_roc:
        assert result.metrics["roc_auc"] == float(np.average(list(expected_roc.values())))
    assert result.metrics["n_classes_absent"] == len(classes) - len(set(labels))
