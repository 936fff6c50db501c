"""quadratic_weighted_kappa / cohen_kappa give exactly scikit-learn's cohen_kappa_score."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from services.scorer.builtin.ordinal import cohen_kappa, quadratic_weighted_kappa
from shared.errors import AutoscorerError, ErrorCode, Fault
from shared.models import Result
from shared.workspace import Workspace


def write_pair(
    root: Path, header: str, y_true: list[Any], y_pred: list[Any], order: list[int]
) -> Workspace:
    """``id,<header>`` files with ids ``0, 1, ...``; pred rows in ``order`` (``str(float)`` is
    its shortest round-tripping form, so floats read back exactly)."""
    ids = [f"{i}" for i in range(len(y_true))]
    (root / "input").mkdir(exist_ok=True)
    (root / "output").mkdir(exist_ok=True)
    gt = "".join(f"{i},{v}\n" for i, v in zip(ids, y_true, strict=True))
    pred = "".join(f"{ids[i]},{y_pred[i]}\n" for i in order)
    (root / "input" / "gt.csv").write_text(f"id,{header}\n" + gt)
    (root / "output" / "pred.csv").write_text(f"id,{header}\n" + pred)
    return Workspace.at(root)


def _score(
    root: Path,
    y_true: list[Any],
    y_pred: list[Any],
    order: list[int],
    params: dict[str, Any] | None = None,
    scorer: Any = quadratic_weighted_kappa,
) -> Result:
    result: Result = scorer.score(write_pair(root, "label", y_true, y_pred, order), params or {})
    return result


def _check(
    result: Result, y_true: list[Any], y_pred: list[Any], labels: list[Any] | None = None
) -> None:
    for name, weights in (
        ("quadratic_weighted_kappa", "quadratic"),
        ("linear_weighted_kappa", "linear"),
        ("cohen_kappa", None),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = cohen_kappa_score(y_true, y_pred, labels=labels, weights=weights)
        if np.isnan(value):
            assert name not in result.metrics
        else:
            assert result.metrics[name] == value, name


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[int], list[int], list[int]]:
    values = draw(st.lists(st.integers(-5, 12), min_size=1, max_size=6, unique=True))
    n = draw(st.integers(1, 50))
    y_true = draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))
    return y_true, y_pred, draw(st.permutations(range(n)))


@settings(max_examples=100, deadline=None)
@given(cases())
def test_matches_sklearn(case: tuple[list[int], list[int], list[int]]) -> None:
    y_true, y_pred, order = case
    undefined = len(set(y_true) | set(y_pred)) == 1  # one and the same class in both
    with tempfile.TemporaryDirectory() as tmp:
        if undefined:
            with pytest.raises(AutoscorerError, match="undefined"):
                _score(Path(tmp), y_true, y_pred, order)
            return
        result = _score(Path(tmp), y_true, y_pred, order)
    _check(result, y_true, y_pred)
    assert result.summary["score"] == result.metrics["quadratic_weighted_kappa"]


@pytest.mark.parametrize("seed", range(3))
def test_medium_random_inputs(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 10_000
    y_true = rng.integers(0, 6, n)
    y_pred = np.clip(y_true + rng.integers(-2, 3, n), 0, 7)  # 6 and 7 only predicted
    result = _score(
        tmp_path, y_true.tolist(), y_pred.tolist(), rng.permutation(n).tolist(), scorer=cohen_kappa
    )
    _check(result, y_true.tolist(), y_pred.tolist())
    assert result.summary["cohen_kappa"] == result.metrics["cohen_kappa"]


def test_named_labels_in_param_order(tmp_path: Path) -> None:
    order = ["low", "mid", "high"]
    y_true = ["low", "mid", "high", "high", "mid", "low"]
    y_pred = ["mid", "mid", "high", "low", "high", "low"]
    result = _score(tmp_path, y_true, y_pred, [5, 4, 3, 2, 1, 0], {"labels": order})
    _check(result, y_true, y_pred, labels=order)


def test_weights_use_positions_not_values(tmp_path: Path) -> None:
    y_true, y_pred = [1, 2, 5, 5], [1, 5, 2, 5]
    result = _score(tmp_path, y_true, y_pred, [0, 1, 2, 3])
    _check(result, y_true, y_pred)
    assert result.metrics["n_classes"] == 3.0


def test_integral_floats_count_as_integers(tmp_path: Path) -> None:
    result = _score(tmp_path, [1, 2, 3], ["1.0", "2", "3e0"], [0, 1, 2])
    assert result.metrics["quadratic_weighted_kappa"] == 1.0


@pytest.mark.parametrize(
    ("y_true", "y_pred", "params", "fault", "rows"),
    [
        ([1, 2, 3], [1, "2.5", 3], {}, Fault.PARTICIPANT, [2]),
        ([1, 2, 3], [1, "two", 3], {}, Fault.PARTICIPANT, [2]),
        ([1, 2, "x"], [1, 2, 3], {}, Fault.ORGANISER, [3]),
        (["a", "b"], ["a", "c"], {"labels": ["a", "b"]}, Fault.PARTICIPANT, [2]),
        (["a", "z"], ["a", "b"], {"labels": ["a", "b"]}, Fault.ORGANISER, [2]),
        ([3, 3], [3, 3], {}, Fault.ORGANISER, None),
    ],
)
def test_bad_labels(
    tmp_path: Path,
    y_true: list[Any],
    y_pred: list[Any],
    params: dict[str, Any],
    fault: Fault,
    rows: list[int] | None,
) -> None:
    with pytest.raises(AutoscorerError) as info:
        _score(tmp_path, y_true, y_pred, list(range(len(y_true))), params)
    assert info.value.code == ErrorCode.BAD_FORMAT and info.value.fault == fault
    if rows is not None:
        assert info.value.details["rows"] == rows


@pytest.mark.parametrize("params", [{"labels": ["a"]}, {"weights": "linear"}])
def test_bad_params(tmp_path: Path, params: dict[str, Any]) -> None:
    with pytest.raises(AutoscorerError) as info:
        _score(tmp_path, [1, 2], [1, 2], [0, 1], params)
    assert info.value.code == ErrorCode.BAD_PARAMS


def test_missing_and_duplicate_ids(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    (tmp_path / "input" / "gt.csv").write_text("id,label\na,1\nb,2\n")
    (tmp_path / "output" / "pred.csv").write_text("id,label\na,1\n")
    with pytest.raises(AutoscorerError) as info:
        quadratic_weighted_kappa.score(Workspace.at(tmp_path), {})
    assert info.value.code == ErrorCode.MISMATCH and info.value.details["missing"] == ["b"]
    (tmp_path / "output" / "pred.csv").write_text("id,label\na,1\na,2\nb,2\n")
    with pytest.raises(AutoscorerError) as info:
        quadratic_weighted_kappa.score(Workspace.at(tmp_path), {})
    assert info.value.code == ErrorCode.BAD_FORMAT and info.value.details["duplicates"] == ["a"]


def test_labels_spanning_a_huge_range(tmp_path: Path) -> None:
    """Beyond DIRECT_SPAN the classes are found with np.unique instead of a table."""
    y_true = [0, 10**7, -(10**9), 10**7, 5]
    y_pred = [0, 10**7, 5, -(10**9), 5]
    result = _score(tmp_path, y_true, y_pred, [4, 3, 2, 1, 0])
    _check(result, y_true, y_pred)
    assert result.metrics["n_classes"] == 4.0
