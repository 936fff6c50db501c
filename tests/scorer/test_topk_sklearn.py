"""top_k_accuracy gives exactly scikit-learn's top_k_accuracy_score, ties and two classes too."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import top_k_accuracy_score

from services.scorer.builtin.topk import top_k_accuracy
from shared.errors import AutoscorerError, ErrorCode
from tests.scorer.test_probabilities_sklearn import write


def reference(labels: list[str], scores: np.ndarray, classes: list[str], k: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k >= number of classes
        y_score = scores[:, 1] if len(classes) == 2 else scores
        return float(top_k_accuracy_score(labels, y_score, k=k, labels=classes))


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[str], np.ndarray, list[str], int, list[int]]:
    n_classes = draw(st.integers(2, 6))
    classes = [f"c{i}" for i in range(n_classes)]
    n = draw(st.integers(1, 40))
    codes = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    low = draw(st.sampled_from([-3, 0]))  # negative scores: not probabilities, still ranked
    values = draw(st.lists(st.integers(low, 3), min_size=n * n_classes, max_size=n * n_classes))
    scores = np.array(values, dtype=np.float64).reshape(n, n_classes) / 3  # many ties
    k = draw(st.integers(1, n_classes + 1))
    return [classes[c] for c in codes], scores, classes, k, draw(st.permutations(range(n)))


@settings(max_examples=100, deadline=None)
@given(cases())
def test_matches_sklearn(case: tuple[list[str], np.ndarray, list[str], int, list[int]]) -> None:
    labels, scores, classes, k, order = case
    with tempfile.TemporaryDirectory() as tmp:
        result = top_k_accuracy.score(write(Path(tmp), labels, scores, classes, order), {"k": k})
    assert result.metrics["top_k_accuracy"] == reference(labels, scores, classes, k)
    assert result.metrics["top_1_accuracy"] == reference(labels, scores, classes, 1)
    assert result.summary["score"] == result.metrics["top_k_accuracy"]


def test_medium_random_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    classes = sorted(f"label {i}" for i in range(30))  # scikit-learn wants them sorted
    codes = rng.integers(0, 30, 5000)
    scores = np.round(rng.random((5000, 30)), 2)
    labels = [classes[c] for c in codes]
    ws = write(
        tmp_path,
        labels,
        scores,
        classes,
        rng.permutation(5000).tolist(),
        rng.permutation(30).tolist(),
    )
    result = top_k_accuracy.score(ws, {})
    assert result.metrics["top_k_accuracy"] == reference(labels, scores, classes, 5)
    assert result.metrics["k"] == 5.0


@pytest.mark.parametrize("params", [{"k": 0}, {"k": "two"}, {"kk": 2}])
def test_bad_params(tmp_path: Path, params: dict[str, object]) -> None:
    ws = write(tmp_path, ["a", "b"], np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), ["a", "b", "c"])
    with pytest.raises(AutoscorerError) as info:
        top_k_accuracy.score(ws, params)
    assert info.value.code == ErrorCode.BAD_PARAMS


def test_scores_need_not_be_probabilities_but_must_be_finite(tmp_path: Path) -> None:
    ws = write(tmp_path, ["a", "b"], np.array([[5.0, -2.0, 7.0], [0.0, 9.0, 1.0]]), ["a", "b", "c"])
    assert top_k_accuracy.score(ws, {"k": 2}).metrics["top_k_accuracy"] == 1.0
    (tmp_path / "output" / "pred.csv").write_text("id,a,b,c\nr0000,1,inf,0\nr0001,0,1,0\n")
    with pytest.raises(AutoscorerError) as info:
        top_k_accuracy.score(ws, {"k": 2})
    assert info.value.code == ErrorCode.BAD_FORMAT and info.value.details["rows"] == [1]


def test_one_score_column_is_refused(tmp_path: Path) -> None:
    ws = write(tmp_path, ["a", "b"], np.array([[1.0, 0.0], [0.0, 1.0]]), ["a", "b"])
    (tmp_path / "output" / "pred.csv").write_text("id,a\nr0000,1\nr0001,0\n")
    with pytest.raises(AutoscorerError) as info:
        top_k_accuracy.score(ws, {"k": 1})
    assert info.value.code == ErrorCode.BAD_FORMAT and "at least 2" in info.value.message
