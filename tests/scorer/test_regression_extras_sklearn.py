"""MAPE, RMSLE, median absolute error and explained variance equal scikit-learn's, bit for bit,
and the regression_mae/mape/rmsle/median_ae/explained_variance scorers summarise them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    explained_variance_score,
    mean_absolute_error,
    mean_absolute_percentage_error,
    median_absolute_error,
    root_mean_squared_log_error,
)

from services.scorer.builtin.regression import (
    regression_explained_variance,
    regression_mae,
    regression_mape,
    regression_median_ae,
    regression_rmse,
    regression_rmsle,
)
from shared.errors import AutoscorerError, ErrorCode, Fault
from shared.models import Result
from tests.scorer.test_ordinal_sklearn import write_pair
from tests.scorer.test_regression_sklearn import cases as regression_cases


def _score(
    root: Path,
    y_true: list[float],
    y_pred: list[float],
    order: list[int],
    scorer: Any = regression_rmse,
) -> Result:
    ws = write_pair(root, "value", y_true, y_pred, order)
    result: Result = scorer.score(ws, {"plots": False})
    return result


def _check(result: Result, y_true: list[float], y_pred: list[float]) -> None:
    yt, yp = np.array(y_true), np.array(y_pred)
    assert result.metrics["mae"] == mean_absolute_error(yt, yp)
    assert result.metrics["median_ae"] == median_absolute_error(yt, yp)
    with np.errstate(over="ignore"):
        mape = mean_absolute_percentage_error(yt, yp)
    assert result.metrics.get("mape") == (mape if np.isfinite(mape) else None)
    if np.all(yt > -1) and np.all(yp > -1):
        assert result.metrics["rmsle"] == root_mean_squared_log_error(yt, yp)
    else:
        assert "rmsle" not in result.metrics  # scikit-learn raises ValueError
    if len(yt) >= 2:
        with np.errstate(over="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = explained_variance_score(yt, yp)
        assert result.metrics.get("explained_variance") == (
            expected if np.isfinite(expected) else None
        )
    else:
        assert "explained_variance" not in result.metrics


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[float], list[float], list[int]]:
    """test_regression_sklearn's cases (constant truths, perfect predictions), often made
    non-negative (so RMSLE is defined) and often with a zero truth (MAPE's epsilon floor)."""
    y_true, y_pred, order = draw(regression_cases())
    if draw(st.booleans()):
        y_true, y_pred = [abs(v) for v in y_true], [abs(v) for v in y_pred]
    if draw(st.booleans()):
        y_true[0] = 0.0
    return y_true, y_pred, order


@settings(max_examples=100, deadline=None)
@given(case=cases())
def test_extras_match_sklearn(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[list[float], list[float], list[int]]
) -> None:
    y_true, y_pred, order = case
    result = _score(tmp_path_factory.mktemp("case"), y_true, y_pred, order)
    _check(result, y_true, y_pred)


@pytest.mark.parametrize("seed", range(3))
def test_medium_random_inputs(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_001  # odd and even medians are both covered by the hypothesis test
    y_true = np.abs(rng.standard_normal(n) * 10 ** rng.uniform(0, 4)).tolist()
    y_pred = np.abs(np.array(y_true) + rng.standard_normal(n)).tolist()
    _check(_score(tmp_path, y_true, y_pred, rng.permutation(n).tolist()), y_true, y_pred)


@pytest.mark.parametrize(
    ("scorer", "primary", "higher"),
    [
        (regression_mae, "mae", False),
        (regression_mape, "mape", False),
        (regression_rmsle, "rmsle", False),
        (regression_median_ae, "median_ae", False),
        (regression_explained_variance, "explained_variance", True),
    ],
)
def test_each_scorer_summarises_its_metric(
    tmp_path: Path, scorer: Any, primary: str, higher: bool
) -> None:
    y_true, y_pred = [1.0, 2.0, 4.0, 0.5], [1.5, 2.0, 3.0, 0.0]
    result = _score(tmp_path, y_true, y_pred, [3, 1, 0, 2], scorer)
    _check(result, y_true, y_pred)
    assert result.summary[primary] == result.summary["score"] == result.metrics[primary]
    assert scorer.info.higher_is_better is higher


@pytest.mark.parametrize(
    ("y_true", "y_pred", "fault", "rows"),
    [
        ([1.0, -1.0, 2.0], [1.0, 1.0, 2.0], Fault.ORGANISER, [2]),
        ([1.0, 1.0, 2.0], [1.0, -3.5, 2.0], Fault.PARTICIPANT, [2]),
    ],
)
def test_rmsle_refuses_values_at_or_below_minus_one(
    tmp_path: Path, y_true: list[float], y_pred: list[float], fault: Fault, rows: list[int]
) -> None:
    with pytest.raises(AutoscorerError) as info:
        _score(tmp_path, y_true, y_pred, [0, 1, 2], regression_rmsle)
    assert info.value.code == ErrorCode.BAD_FORMAT and info.value.fault == fault
    assert info.value.details["rows"] == rows
    assert "rmsle" not in _score(tmp_path, y_true, y_pred, [0, 1, 2]).metrics


def test_explained_variance_of_one_row_is_undefined(tmp_path: Path) -> None:
    with pytest.raises(AutoscorerError) as info:
        _score(tmp_path, [1.0], [2.0], [0], regression_explained_variance)
    assert info.value.code == ErrorCode.BAD_FORMAT
    assert _score(tmp_path, [1.0], [2.0], [0], regression_mae).metrics["mae"] == 1.0
