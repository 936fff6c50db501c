"""Bad and unusual CSV inputs of the tabular scorers: each case gets its code, no traceback."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scorer.builtin.classification import classification_accuracy, classification_f1
from services.scorer.builtin.regression import regression_rmse
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.scoring import ScorerDef
from shared.workspace import Workspace

GOOD_GT = b"id,label\n1,cat\n2,dog\n3,cat\n"
GOOD_PRED = b"id,label\n3,cat\n1,dog\n2,dog\n"


def _ws(root: Path, gt: bytes | None, pred: bytes | None) -> Workspace:
    (root / "input").mkdir()
    (root / "output").mkdir()
    if gt is not None:
        (root / "input" / "gt.csv").write_bytes(gt)
    if pred is not None:
        (root / "output" / "pred.csv").write_bytes(pred)
    return Workspace.at(root)


def _rows(rows: list[tuple[str, str]], header: tuple[str, str] = ("id", "label")) -> bytes:
    lines: list[str] = []

    class _Sink:
        def write(self, text: str) -> None:
            lines.append(text)

    writer = csv.writer(_Sink(), lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return "".join(lines).encode("utf-8")


def _error(
    root: Path, gt: bytes | None, pred: bytes | None, scorer: ScorerDef[Any] = classification_f1
) -> AutoscorerError:
    with pytest.raises(AutoscorerError) as caught:
        scorer.score(_ws(root, gt, pred), {})
    return caught.value


def test_good_files_score(tmp_path: Path) -> None:
    result = classification_f1.score(_ws(tmp_path, GOOD_GT, GOOD_PRED), {})
    # rows by id: cat->cat, cat->dog, dog->dog
    assert result.metrics["f1_per_class"] == {"cat": 2 / 3, "dog": 2 / 3}
    assert result.summary["f1_macro"] == result.metrics["f1_macro"]


@pytest.mark.parametrize(
    ("gt", "pred", "missing"),
    [(None, GOOD_PRED, "input/gt.csv"), (GOOD_GT, None, "output/pred.csv")],
)
def test_missing_file(tmp_path: Path, gt: bytes | None, pred: bytes | None, missing: str) -> None:
    error = _error(tmp_path, gt, pred)
    assert error.code is ErrorCode.MISSING_FILE
    assert error.details["path"] == missing


@pytest.mark.parametrize(
    "pred",
    [
        b"id,prediction\n1,cat\n",  # wrong name
        b"id\n1\n",  # missing column
        b"id,label,score\n1,cat,0.5\n",  # extra column
        b"ID,Label\n1,cat\n",  # names are case-sensitive
        b"label,id\n cat,1\n",  # wrong order
    ],
)
def test_wrong_header_is_bad_format(tmp_path: Path, pred: bytes) -> None:
    error = _error(tmp_path, GOOD_GT, pred)
    assert error.code is ErrorCode.BAD_FORMAT
    assert error.details["file"] == "pred"
    assert error.details["expected"] == [["id", "label"]]
    assert error.stage is Stage.VALIDATION


@pytest.mark.parametrize(
    "pred",
    [
        b"id,label\n1,cat\n2,dog,extra\n3,cat\n",  # ragged row
        b"id,label\n1,cat\n2\n3,cat\n",  # short row
        b"id,label\n1,c\xffat\n2,dog\n3,cat\n",  # not UTF-8
        b"id,la\xfebel\n1,cat\n",  # header not UTF-8
        b'id,label\n1,"cat\n2,dog\n3,cat\n',  # unterminated quote swallows the rest
    ],
)
def test_unparsable_is_parse_error(tmp_path: Path, pred: bytes) -> None:
    error = _error(tmp_path, GOOD_GT, pred)
    assert error.code is ErrorCode.PARSE_ERROR
    assert error.details["file"] == "pred"


@pytest.mark.parametrize("pred", [b"", b"\n", b"id,label\n", b"id,label\r\n\r\n"])
def test_empty_or_header_only_is_bad_format(tmp_path: Path, pred: bytes) -> None:
    error = _error(tmp_path, GOOD_GT, pred)
    assert error.code is ErrorCode.BAD_FORMAT
    assert error.details["file"] == "pred"


def test_duplicate_pred_ids_are_named(tmp_path: Path) -> None:
    pred = _rows([("1", "cat"), ("2", "dog"), ("2", "cat"), ("3", "cat"), ("3", "dog")])
    error = _error(tmp_path, GOOD_GT, pred)
    assert error.code is ErrorCode.BAD_FORMAT
    assert error.details["file"] == "pred"
    assert sorted(error.details["duplicates"]) == ["2", "3"]
    assert error.details["duplicate_count"] == 2


def test_duplicate_gt_ids_are_the_organisers_problem(tmp_path: Path) -> None:
    gt = _rows([("1", "cat"), ("1", "dog"), ("2", "cat")])
    error = _error(tmp_path, gt, GOOD_PRED)
    assert error.code is ErrorCode.BAD_FORMAT
    assert error.details["file"] == "gt"
    assert error.details["side"] == "organiser"
    assert error.stage is Stage.CONFIG
    assert error.details["duplicates"] == ["1"]


def test_duplicate_gt_ids_in_identical_files(tmp_path: Path) -> None:
    same = _rows([("1", "cat"), ("1", "dog")])
    error = _error(tmp_path, same, same)
    assert (error.code, error.details["file"]) == (ErrorCode.BAD_FORMAT, "gt")


def test_missing_and_extra_ids_are_mismatch(tmp_path: Path) -> None:
    gt = _rows([(str(i), "a") for i in range(100)])
    pred = _rows([(str(i), "a") for i in range(10, 100)] + [("x1", "a"), ("x2", "a"), ("x3", "a")])
    error = _error(tmp_path, gt, pred)
    assert error.code is ErrorCode.MISMATCH
    assert error.details["missing_count"] == 10
    assert error.details["extra_count"] == 3
    assert set(error.details["missing"]) <= {str(i) for i in range(10)}
    assert len(error.details["missing"]) == 5
    assert sorted(error.details["extra"]) == ["x1", "x2", "x3"]


def test_leading_zeros_are_different_ids(tmp_path: Path) -> None:
    gt = _rows([("007", "a"), ("8", "b")])
    pred = _rows([("7", "a"), ("8", "b")])
    error = _error(tmp_path, gt, pred)
    assert error.code is ErrorCode.MISMATCH
    assert error.details["missing"] == ["007"]
    assert error.details["extra"] == ["7"]


def test_whitespace_and_case_are_kept(tmp_path: Path) -> None:
    gt = _rows([("1", "Cat"), ("2", "cat"), ("3", " cat")])
    pred = _rows([("1", "cat"), ("2", "cat"), ("3", " cat")])
    result = classification_accuracy.score(_ws(tmp_path, gt, pred), {})
    assert result.metrics["accuracy"] == 2 / 3
    assert set(result.metrics["accuracy_per_class"]) == {"Cat", "cat", " cat"}


def test_quoted_unicode_labels_and_bom(tmp_path: Path) -> None:
    labels = ["a,b", 'say "hi"', "猫", "ñ", "NA", "null"]
    gt = _rows([(f"id,{i}", label) for i, label in enumerate(labels)])
    backwards = list(reversed(list(enumerate(labels))))
    pred = b"\xef\xbb\xbf" + _rows([(f"id,{i}", label) for i, label in backwards])
    result = classification_accuracy.score(_ws(tmp_path, gt, pred), {})
    assert result.metrics["accuracy"] == 1.0
    assert sorted(result.metrics["accuracy_per_class"]) == sorted(labels)


def test_crlf_line_endings(tmp_path: Path) -> None:
    gt = b"id,label\r\n1,cat\r\n2,dog\r\n"
    pred = b"id,label\r\n2,dog\r\n1,dog\r\n"
    result = classification_accuracy.score(_ws(tmp_path, gt, pred), {})
    assert result.metrics["accuracy"] == 0.5


def test_empty_label_is_refused_by_default(tmp_path: Path) -> None:
    pred = b"id,label\n1,cat\n2,\n3,cat\n"
    error = _error(tmp_path, GOOD_GT, pred)
    assert error.code is ErrorCode.BAD_FORMAT
    assert (error.details["rows"], error.details["ids"]) == ([2], ["2"])


def test_empty_label_can_be_a_class(tmp_path: Path) -> None:
    pred = b'id,label\n1,cat\n2,""\n3,cat\n'
    ws = _ws(tmp_path, GOOD_GT, pred)
    result = classification_f1.score(ws, {"allow_empty_label": True})
    assert set(result.metrics["f1_per_class"]) == {"cat", "dog"}
    assert (result.metrics["n_classes"], result.metrics["n_pred_only_classes"]) == (3, 1)
    assert result.metrics["f1_macro"] == 1 / 3  # cat 1, dog 0, and "" a class with F1 0


def test_empty_id_is_refused(tmp_path: Path) -> None:
    gt = b"id,label\n1,cat\n,dog\n"
    error = _error(tmp_path, gt, GOOD_PRED)
    assert error.code is ErrorCode.BAD_FORMAT
    assert (error.details["file"], error.details["rows"]) == ("gt", [2])


def test_unknown_param_is_bad_params(tmp_path: Path) -> None:
    with pytest.raises(AutoscorerError) as caught:
        classification_f1.score(_ws(tmp_path, GOOD_GT, GOOD_PRED), {"average": "micro"})
    assert caught.value.code is ErrorCode.BAD_PARAMS


@pytest.mark.parametrize(
    ("pred", "row", "value"),
    [
        (b"id,value\n1,1.5\n2,abc\n3,2\n", 2, "abc"),
        (b"id,value\n1,1.5\n2,2\n3,nan\n", 3, "nan"),
        (b"id,value\n1,inf\n2,2\n3,1\n", 1, "inf"),
        (b"id,value\n1,1e400\n2,2\n3,1\n", 1, "1e400"),
        (b"id,value\n1,1\n2, 2\n3,1\n", 2, " 2"),
        (b"id,value\n1,1\n2,2\n3,\n", 3, ""),
    ],
)
def test_regression_bad_numbers_name_row_and_id(
    tmp_path: Path, pred: bytes, row: int, value: str
) -> None:
    gt = b"id,value\n1,1\n2,2\n3,3\n"
    error = _error(tmp_path, gt, pred, regression_rmse)
    assert error.code is ErrorCode.BAD_FORMAT
    assert error.details["file"] == "pred"
    assert error.details["rows"][0] == row
    assert error.details["ids"][0] == str(row)
    assert error.details["values"][0] == value


def test_regression_bad_ground_truth(tmp_path: Path) -> None:
    gt = b"id,value\n1,1\n2,oops\n"
    error = _error(tmp_path, gt, b"id,value\n1,1\n2,2\n", regression_rmse)
    assert error.code is ErrorCode.BAD_FORMAT
    assert (error.details["file"], error.stage) == ("gt", Stage.CONFIG)


def test_regression_accepts_label_header(tmp_path: Path) -> None:
    gt = b"id,value\n1,1\n2,2\n"
    pred = b"id,label\n2,2.5\n1,1\n"
    result = regression_rmse.score(_ws(tmp_path, gt, pred), {})
    assert result.metrics["mse"] == 0.125


def test_regression_wrong_header(tmp_path: Path) -> None:
    error = _error(tmp_path, b"id,value\n1,1\n", b"id,score\n1,1\n", regression_rmse)
    assert error.code is ErrorCode.BAD_FORMAT
    assert error.details["expected"] == [["id", "value"], ["id", "label"]]


ID_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00")


@settings(max_examples=50, deadline=None)
@given(
    ids=st.lists(st.text(ID_CHARS, min_size=1, max_size=5), min_size=1, max_size=30, unique=True),
    data=st.data(),
)
def test_random_ids_align_or_report_exact_counts(ids: list[str], data: st.DataObject) -> None:
    """Unicode ids with commas and quotes: any order aligns; dropped or foreign ids are counted."""
    labels = [str(i % 3) for i in range(len(ids))]
    dropped = data.draw(st.sets(st.sampled_from(range(len(ids))), max_size=3))
    foreign = data.draw(st.sets(st.text(ID_CHARS, min_size=1, max_size=5), max_size=3))
    foreign -= set(ids)
    kept = [i for i in range(len(ids)) if i not in dropped]
    order = data.draw(st.permutations(kept))
    pred_rows = [(ids[i], labels[i]) for i in order] + [(x, "0") for x in sorted(foreign)]
    with tempfile.TemporaryDirectory() as tmp:
        ws = _ws(Path(tmp), _rows(list(zip(ids, labels, strict=True))), _rows(pred_rows))
        if not dropped and not foreign:
            assert classification_accuracy.score(ws, {}).metrics["accuracy"] == 1.0
            return
        with pytest.raises(AutoscorerError) as caught:
            classification_accuracy.score(ws, {})
    details = caught.value.details
    if not pred_rows:  # a prediction file with a header only
        assert caught.value.code is ErrorCode.BAD_FORMAT
        return
    assert caught.value.code is ErrorCode.MISMATCH
    assert (details["missing_count"], details["extra_count"]) == (len(dropped), len(foreign))
    assert set(details["missing"]) == {ids[i] for i in dropped}
    assert set(details["extra"]) == foreign
