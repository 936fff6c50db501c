"""The integer-id fast path agrees with pyarrow's string lookup, and steps aside when it must."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scorer.builtin import tabular_ints
from services.scorer.builtin.classification import classification_accuracy
from shared.errors import AutoscorerError, ErrorCode
from shared.workspace import Workspace

NATURAL = st.integers(0, 2**63 - 1)


def _ids(values: list[str]) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(values, type=pa.string())])


def _reference(gt: list[str], pred: list[str]) -> list[int]:
    """pyarrow's answer: the gt row of every pred id, -1 if absent (gt ids distinct)."""
    return pc.fill_null(pc.index_in(_ids(pred), value_set=_ids(gt)), -1).to_pylist()


@settings(max_examples=80, deadline=None)
@given(
    gt=st.lists(st.one_of(st.integers(0, 200), NATURAL), min_size=1, max_size=40, unique=True),
    extra=st.lists(st.integers(0, 260), max_size=5),
    data=st.data(),
)
def test_positions_match_pyarrow(gt: list[int], extra: list[int], data: st.DataObject) -> None:
    pred_ints = data.draw(st.permutations(gt))[: data.draw(st.integers(0, len(gt)))] + extra
    if not pred_ints:
        pred_ints = [gt[0]]
    gt_text, pred_text = [str(v) for v in gt], [str(v) for v in pred_ints]
    found = tabular_ints.positions(_ids(gt_text), _ids(pred_text))
    span = max(gt + pred_ints) - min(gt + pred_ints) + 1
    dense = span <= tabular_ints.SPAN_PER_ROW * max(len(gt), len(pred_ints)) + 1024
    assert (found is not None) == dense
    if found is not None:
        assert found.tolist() == _reference(gt_text, pred_text)


@pytest.mark.parametrize(
    "odd", ["007", "00", "+1", "-0", "-1", "0x1f", " 1", "1.0", "", "١٢", "9223372036854775808"]
)
def test_non_canonical_ids_take_the_string_path(odd: str) -> None:
    gt = _ids(["1", "2", odd])
    assert tabular_ints.as_ints(gt) is None
    assert tabular_ints.positions(gt, _ids(["2", "1"])) is None
    assert tabular_ints.all_distinct(gt) is None


def test_repeated_or_sparse_ids_take_the_string_path() -> None:
    assert tabular_ints.all_distinct(_ids(["3", "1", "2"])) is True
    assert tabular_ints.all_distinct(_ids(["3", "1", "3"])) is None
    assert tabular_ints.positions(_ids(["3", "1", "3"]), _ids(["1", "3"])).tolist() == [1, 2]
    sparse = _ids(["1", str(10**12)])
    assert tabular_ints.all_distinct(sparse) is None
    assert tabular_ints.positions(sparse, sparse) is None


def _write(root: Path, gt: list[int], pred: list[int]) -> Workspace:
    (root / "input").mkdir()
    (root / "output").mkdir()
    for path, ids in ((root / "input" / "gt.csv", gt), (root / "output" / "pred.csv", pred)):
        path.write_text("id,label\n" + "".join(f"{i},c{i % 3}\n" for i in ids))
    return Workspace.at(root)


@pytest.mark.parametrize("seed", range(3))
def test_shuffled_integer_ids_score(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    gt = rng.permutation(5000).tolist()
    result = classification_accuracy.score(_write(tmp_path, gt, rng.permutation(gt).tolist()), {})
    assert result.metrics["accuracy"] == 1.0


def _error(root: Path, gt: list[int], pred: list[int]) -> AutoscorerError:
    with pytest.raises(AutoscorerError) as caught:
        classification_accuracy.score(_write(root, gt, pred), {})
    return caught.value


def test_integer_ids_missing_and_extra(tmp_path: Path) -> None:
    error = _error(tmp_path, list(range(100)), [*range(10, 100), 1000, 1001])
    assert error.code is ErrorCode.MISMATCH
    assert (error.details["missing_count"], error.details["extra_count"]) == (10, 2)
    assert sorted(error.details["extra"]) == ["1000", "1001"]


def test_integer_ids_repeated_in_pred(tmp_path: Path) -> None:
    error = _error(tmp_path, [1, 2, 3], [1, 2, 2, 3])
    assert (error.code, error.details["file"], error.details["duplicates"]) == (
        ErrorCode.BAD_FORMAT,
        "pred",
        ["2"],
    )


def test_integer_ids_repeated_in_gt(tmp_path: Path) -> None:
    for pred in ([1, 2, 3], [3, 2, 1], [1, 2, 2, 3]):
        with tempfile.TemporaryDirectory() as tmp:
            error = _error(Path(tmp), [1, 2, 2, 3], pred)
        assert (error.code, error.details["file"]) == (ErrorCode.BAD_FORMAT, "gt")


def test_negative_ids_take_the_string_path(tmp_path: Path) -> None:
    assert tabular_ints.positions(_ids(["-1", "2"]), _ids(["2", "-1"])) is None
    result = classification_accuracy.score(_write(tmp_path, [-1, 2, -3], [-3, 2, -1]), {})
    assert result.metrics["accuracy"] == 1.0
