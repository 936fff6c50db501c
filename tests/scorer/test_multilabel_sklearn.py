"""The multilabel scorers give exactly scikit-learn's numbers on the indicator matrices.

Label sets are written space-separated (in any order, with repeats and extra spaces, which must
not matter); scikit-learn gets ``MultiLabelBinarizer`` matrices over the same labels.
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
from sklearn.metrics import accuracy_score, hamming_loss, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from services.scorer.builtin.multilabel import (
    hamming_loss as hamming_scorer,
)
from services.scorer.builtin.multilabel import (
    multilabel_f1_macro,
    multilabel_f1_micro,
    multilabel_f1_samples,
    subset_accuracy,
)
from shared.errors import AutoscorerError, ErrorCode, Fault
from shared.models import Result
from shared.workspace import Workspace

Sets = list[list[str]]


def _cell(labels: list[str], rng: np.random.Generator | None) -> str:
    if rng is None or not labels:
        return " ".join(labels)
    shuffled = [labels[i] for i in rng.permutation(len(labels))] + labels[:1]  # a repeat
    return "  ".join(shuffled) + " "  # double spaces, a trailing space


def _score(
    root: Path,
    y_true: Sets,
    y_pred: Sets,
    order: list[int],
    params: dict[str, Any] | None = None,
    scorer: Any = multilabel_f1_micro,
    messy: bool = True,
) -> Result:
    rng = np.random.default_rng(len(y_true)) if messy else None
    ids = [f"id{i}" for i in range(len(y_true))]
    (root / "input").mkdir(exist_ok=True)
    (root / "output").mkdir(exist_ok=True)
    gt = "".join(f"{ids[i]},{_cell(y_true[i], None)}\n" for i in range(len(ids)))
    pred = "".join(f"{ids[i]},{_cell(y_pred[i], rng)}\n" for i in order)
    (root / "input" / "gt.csv").write_text("id,labels\n" + gt)
    (root / "output" / "pred.csv").write_text("id,labels\n" + pred)
    result: Result = scorer.score(Workspace.at(root), params or {})
    return result


def _check(result: Result, y_true: Sets, y_pred: Sets, labels: list[str] | None = None) -> None:
    binarizer = MultiLabelBinarizer(classes=labels) if labels else MultiLabelBinarizer()
    binarizer.fit(y_true + y_pred)
    yt, yp = binarizer.transform(y_true), binarizer.transform(y_pred)
    # One label would make an (n, 1) matrix, which scikit-learn takes for a binary target (with
    # two classes, 0 and 1); an unused extra column and labels= keep it multilabel.
    columns = list(range(yt.shape[1]))
    pad_t, pad_p = (np.pad(m, ((0, 0), (0, 1))) for m in (yt, yp))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for average in ("micro", "macro", "weighted", "samples"):
            p, r, f, _ = precision_recall_fscore_support(
                pad_t, pad_p, labels=columns, average=average
            )
            assert result.metrics[f"precision_{average}"] == p, average
            assert result.metrics[f"recall_{average}"] == r, average
            assert result.metrics[f"f1_{average}"] == f, average
    assert result.metrics["hamming_loss"] == hamming_loss(yt, yp)
    assert result.metrics["subset_accuracy"] == accuracy_score(yt, yp)
    assert result.metrics["n_labels"] == len(binarizer.classes_)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Sets, Sets, list[int]]:
    pool = draw(
        st.lists(st.text('abé,"q', min_size=1, max_size=3), min_size=1, max_size=6, unique=True)
    )
    n = draw(st.integers(1, 30))
    sets = st.lists(st.sampled_from(pool), max_size=len(pool), unique=True)
    y_true = draw(st.lists(sets, min_size=n, max_size=n))
    y_true[0] = y_true[0] or [pool[0]]  # at least one ground-truth label
    y_pred = draw(st.lists(sets, min_size=n, max_size=n))
    return y_true, y_pred, draw(st.permutations(range(n)))


@settings(max_examples=100, deadline=None)
@given(cases())
def test_matches_sklearn(case: tuple[Sets, Sets, list[int]]) -> None:
    y_true, y_pred, order = case
    y_true = [[_quoted(x) for x in row] for row in y_true]
    y_pred = [[_quoted(x) for x in row] for row in y_pred]
    with tempfile.TemporaryDirectory() as tmp:
        result = _score(Path(tmp), y_true, y_pred, order)
    _check(result, y_true, y_pred)


def _quoted(label: str) -> str:
    """Labels are CSV-safe here: commas and quotes would need the whole cell quoted."""
    return label.replace(",", "c").replace('"', "q")


@pytest.mark.parametrize("seed", range(3))
def test_medium_random_inputs(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = [f"tag{i}" for i in range(40)]
    n = 3000
    truth = rng.random((n, 40)) < 0.08
    noisy = truth ^ (rng.random((n, 40)) < 0.05)
    y_true = [[names[j] for j in np.flatnonzero(row)] for row in truth]
    y_pred = [[names[j] for j in np.flatnonzero(row)] for row in noisy]
    result = _score(
        tmp_path, y_true, y_pred, rng.permutation(n).tolist(), scorer=multilabel_f1_samples
    )
    _check(result, y_true, y_pred)
    assert result.summary["score"] == result.metrics["f1_samples"]


@pytest.mark.parametrize(
    ("scorer", "primary"),
    [
        (multilabel_f1_micro, "f1_micro"),
        (multilabel_f1_macro, "f1_macro"),
        (multilabel_f1_samples, "f1_samples"),
        (hamming_scorer, "hamming_loss"),
        (subset_accuracy, "subset_accuracy"),
    ],
)
def test_every_scorer_summarises_its_metric(tmp_path: Path, scorer: Any, primary: str) -> None:
    y_true, y_pred = [["a", "b"], [], ["c"]], [["a"], ["b"], ["c"]]
    result = _score(tmp_path, y_true, y_pred, [2, 0, 1], scorer=scorer, messy=False)
    _check(result, y_true, y_pred)
    assert result.summary[primary] == result.summary["score"] == result.metrics[primary]


def test_labels_param_fixes_the_label_set(tmp_path: Path) -> None:
    labels = ["a", "b", "c", "unused"]
    y_true, y_pred = [["a"], ["b", "c"]], [["a", "c"], ["b"]]
    result = _score(tmp_path, y_true, y_pred, [1, 0], {"labels": labels})
    _check(result, y_true, y_pred, labels)
    assert result.metrics["hamming_loss"] == 2 / 8


@pytest.mark.parametrize(
    ("y_true", "y_pred", "params", "fault", "rows"),
    [
        ([["a"], ["b"]], [["a"], ["z"]], {"labels": ["a", "b"]}, Fault.PARTICIPANT, [1]),
        ([["a"], ["z"]], [["a"], ["b"]], {"labels": ["a", "b"]}, Fault.ORGANISER, [2]),
        ([[], []], [["a"], []], {}, Fault.ORGANISER, None),
    ],
)
def test_bad_labels(
    tmp_path: Path,
    y_true: Sets,
    y_pred: Sets,
    params: dict[str, Any],
    fault: Fault,
    rows: list[int] | None,
) -> None:
    """Pred rows are written reversed: the error names the row of the pred file itself."""
    with pytest.raises(AutoscorerError) as info:
        _score(tmp_path, y_true, y_pred, [1, 0], params, messy=False)
    assert info.value.code == ErrorCode.BAD_FORMAT and info.value.fault == fault
    if rows is not None:
        assert info.value.details["rows"] == rows


def test_bad_header_params_and_ids(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    (tmp_path / "input" / "gt.csv").write_text("id,labels\n1,a b\n2,c\n")
    (tmp_path / "output" / "pred.csv").write_text("id,label\n1,a\n2,c\n")
    ws = Workspace.at(tmp_path)
    with pytest.raises(AutoscorerError) as info:
        multilabel_f1_micro.score(ws, {})
    assert info.value.code == ErrorCode.BAD_FORMAT and info.value.details["file"] == "pred"
    (tmp_path / "output" / "pred.csv").write_text("id,labels\n1,a\n1,c\n")
    with pytest.raises(AutoscorerError) as info:
        multilabel_f1_micro.score(ws, {})
    assert info.value.code == ErrorCode.BAD_FORMAT and info.value.details["duplicates"] == ["1"]
    (tmp_path / "output" / "pred.csv").write_text("id,labels\n1,a\n")
    with pytest.raises(AutoscorerError) as info:
        multilabel_f1_micro.score(ws, {})
    assert info.value.code == ErrorCode.MISMATCH
    with pytest.raises(AutoscorerError) as info:
        multilabel_f1_micro.score(ws, {"average": "micro"})
    assert info.value.code == ErrorCode.BAD_PARAMS
