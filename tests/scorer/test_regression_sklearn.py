"""regression_rmse gives exactly scikit-learn's rmse, mse, mae and r2 on random inputs.

Values are written with ``repr`` (the shortest round-tripping form) and compared with sklearn run
on the original floats, so the tests also check that parsing reads every value back exactly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    root_mean_squared_error,
)

from services.scorer.builtin.regression import regression_rmse
from shared.models import Result
from shared.workspace import Workspace

FLOATS = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


def _csv(header: str, ids: list[str], values: list[float]) -> bytes:
    body = "".join(f"{i},{v!r}\n" for i, v in zip(ids, values, strict=True))
    return f"id,{header}\n{body}".encode()


def _score(root: Path, y_true: list[float], y_pred: list[float], order: list[int]) -> Result:
    ids = [f"{i:05d}" for i in range(len(y_true))]
    (root / "input").mkdir()
    (root / "output").mkdir()
    (root / "input" / "gt.csv").write_bytes(_csv("value", ids, y_true))
    pred = _csv("value", [ids[i] for i in order], [y_pred[i] for i in order])
    (root / "output" / "pred.csv").write_bytes(pred)
    return regression_rmse.score(Workspace.at(root), {"plots": False})  # tests/report: plots


def _check(result: Result, y_true: list[float], y_pred: list[float]) -> None:
    yt, yp = np.array(y_true), np.array(y_pred)
    assert result.metrics["rmse"] == root_mean_squared_error(yt, yp)
    assert result.metrics["rmse"] == float(np.sqrt(mean_squared_error(yt, yp)))
    assert result.metrics["mse"] == mean_squared_error(yt, yp)
    assert result.metrics["mae"] == mean_absolute_error(yt, yp)
    assert result.summary["rmse"] == result.metrics["rmse"]
    if len(yt) >= 2:
        with np.errstate(over="ignore"):
            expected = r2_score(yt, yp)
        if np.isfinite(expected):
            assert result.metrics["r2"] == expected
        else:
            assert "r2" not in result.metrics  # -inf: a ratio over a ~1e-300 spread overflows
    else:
        assert "r2" not in result.metrics  # sklearn: NaN with a warning


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[float], list[float], list[int]]:
    n = draw(st.integers(1, 40))
    if draw(st.booleans()):
        y_true = [draw(FLOATS)] * n  # constant target: r2's special cases
    else:
        y_true = draw(st.lists(FLOATS, min_size=n, max_size=n))
    perfect = draw(st.booleans())
    y_pred = list(y_true) if perfect else draw(st.lists(FLOATS, min_size=n, max_size=n))
    return y_true, y_pred, draw(st.permutations(range(n)))


@settings(max_examples=80, deadline=None)
@given(cases())
def test_metrics_match_sklearn(case: tuple[list[float], list[float], list[int]]) -> None:
    y_true, y_pred, order = case
    with tempfile.TemporaryDirectory() as tmp:
        _check(_score(Path(tmp), y_true, y_pred, order), y_true, y_pred)


def test_an_r2_that_overflows_is_left_out(tmp_path: Path) -> None:
    """The case hypothesis found: a truth spread of ~1e-270 against a large error."""
    y_true = [1.12423689e-135] * 41  # their mean rounds: a spread of ~1e-300, not 0
    y_pred = [0.0] * 40 + [1e6]
    result = _score(tmp_path, y_true, y_pred, list(range(41)))
    _check(result, y_true, y_pred)
    assert "r2" not in result.metrics and result.error is None


@pytest.mark.parametrize("seed", range(4))
def test_medium_random_inputs_match_sklearn(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    y_true = (rng.standard_normal(n) * 10 ** rng.uniform(-3, 6)).tolist()
    y_pred = (np.array(y_true) + rng.standard_normal(n) * rng.uniform(0.1, 100)).tolist()
    _check(_score(tmp_path, y_true, y_pred, rng.permutation(n).tolist()), y_true, y_pred)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "r2"),
    [
        ([3.0, 3.0, 3.0], [3.0, 3.0, 3.0], 1.0),  # constant truth, perfect: 1.0
        ([3.0, 3.0, 3.0], [3.0, 2.0, 3.0], 0.0),  # constant truth, imperfect: 0.0, not -inf
        ([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], 0.0),  # predicting the mean
    ],
)
def test_r2_edge_cases(tmp_path: Path, y_true: list[float], y_pred: list[float], r2: float) -> None:
    result = _score(tmp_path, y_true, y_pred, [2, 1, 0])
    assert result.metrics["r2"] == r2 == r2_score(y_true, y_pred)


def test_exponent_and_sign_forms_parse(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    (tmp_path / "input" / "gt.csv").write_bytes(b"id,value\na,1e3\nb,-.5\nc,+2\n")
    (tmp_path / "output" / "pred.csv").write_bytes(b"id,label\nc,2.\nb,-0.5\na,1000\n")
    result = regression_rmse.score(Workspace.at(tmp_path), {})
    assert (result.metrics["mse"], result.metrics["mae"]) == (0.0, 0.0)
