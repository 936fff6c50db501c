"""Reading ``id,<value>`` CSV pairs (ground truth and prediction) and lining them up by id.

Everything is a string: ids and values are compared byte for byte (no stripping, no case folding,
``"007" != "7"``). The header is checked first with the ``csv`` module so that a wrong header is a
clear ``BAD_FORMAT``; the body is read by ``pyarrow.csv`` (multi-threaded, every column a string).

Errors name the file: ``details["file"]`` is ``"gt"`` or ``"pred"``. A broken ground truth is the
organiser's problem, so its errors carry ``stage=config``, ``fault=organiser`` and
``details["side"] = "organiser"``; a broken prediction carries ``stage=validation``,
``fault=participant`` and ``details["side"] = "participant"`` (docs/ERRORS.md, whose fault).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from services.scorer.builtin import tabular_ints
from shared.errors import MAX_MESSAGE, AutoscorerError, ErrorCode, Fault, Stage, clip
from shared.workspace import Workspace

GT_PATH = "input/gt.csv"
PRED_PATH = "output/pred.csv"
EXAMPLES = 5  # how many offending ids or rows an error lists
_HEADER_LIMIT = 1 << 16
_BOM = "\ufeff"

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class CsvFile:
    """One side of the pair: which file it is, and where it lives in the workspace."""

    role: Literal["gt", "pred"]
    relative: str

    @property
    def stage(self) -> Stage:
        return Stage.CONFIG if self.role == "gt" else Stage.VALIDATION

    @property
    def fault(self) -> Fault:
        return Fault.ORGANISER if self.role == "gt" else Fault.PARTICIPANT

    def error(self, code: ErrorCode, message: str, **details: Any) -> AutoscorerError:
        info = {"file": self.role, "path": self.relative, "side": self.fault.value, **details}
        return AutoscorerError(
            code,
            clip(f"{self.relative}: {message}", MAX_MESSAGE),
            stage=self.stage,
            details=clip(info),
            fault=self.fault,
        )


GT = CsvFile("gt", GT_PATH)
PRED = CsvFile("pred", PRED_PATH)


@dataclass(frozen=True, slots=True)
class Column:
    """A read file: its ids, its value column (strings) and which header it had."""

    ids: pa.ChunkedArray
    values: pa.ChunkedArray
    header: tuple[str, str]


@dataclass(frozen=True, slots=True)
class Pair:
    """Ground truth and prediction, with ``order`` mapping gt rows to pred rows.

    ``order[i]`` is the prediction row holding gt row ``i``'s id; ``None`` means the files already
    list the same ids in the same order.
    """

    gt: Column
    pred: Column
    order: IntArray | None

    def __len__(self) -> int:
        return len(self.gt.values)

    def aligned(self, pred_values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Prediction values (already converted to numpy) put in ground-truth row order."""
        return pred_values if self.order is None else pred_values[self.order]


def read_pair(ws: Workspace, headers: Sequence[tuple[str, str]]) -> Pair:
    """Read ``input/gt.csv`` and ``output/pred.csv`` (each with one of ``headers``), aligned."""
    gt = read_column(ws, GT, headers)
    pred = read_column(ws, PRED, headers)
    return Pair(gt, pred, align(gt.ids, pred.ids))


def read_column(ws: Workspace, source: CsvFile, headers: Sequence[tuple[str, str]]) -> Column:
    table, header = read_table(ws, source, headers)
    ids, values = table.column(0), table.column(1)
    _refuse_empty(ids, ids, source, header[0])
    return Column(ids, values, (header[0], header[1]))


def read_table(
    ws: Workspace, source: CsvFile, headers: Sequence[tuple[str, ...]]
) -> tuple[pa.Table, tuple[str, ...]]:
    """A CSV file with one of ``headers`` (any width), every column a string without line
    breaks, at least one row; the header found is returned with the table."""
    path = ws.root / source.relative
    if not path.is_file():
        raise source.error(ErrorCode.MISSING_FILE, "file is missing")
    with path.open("rb") as handle:
        first_line = handle.readline(_HEADER_LIMIT)
    header = _check_header(first_line, source, headers)
    table = _read_body(str(path), source, header)
    if table.num_rows == 0:
        raise source.error(ErrorCode.BAD_FORMAT, "has a header but no rows")
    for name, column in zip(header, table.columns, strict=True):
        _refuse_line_breaks(column, source, name)
    return table, header


def _check_header(
    line: bytes, source: CsvFile, headers: Sequence[tuple[str, ...]]
) -> tuple[str, ...]:
    expected = " or ".join(",".join(h) for h in headers)
    found = _header_fields(line, source, expected)
    for header in headers:
        if tuple(found) == header:
            return header
    shown = [name[:100] for name in found[:10]]  # a header line may be 64 KiB of anything
    raise source.error(
        ErrorCode.BAD_FORMAT,
        f"header must be {expected}, found {','.join(found)[:200]}",
        expected=[list(h) for h in headers],
        found=shown,
    )


def read_header(ws: Workspace, source: CsvFile, expected: str) -> tuple[str, ...]:
    """The header fields of a file whose columns are known only from it (one per class, say);
    the caller checks them and reads the body with ``read_table(ws, source, [header])``."""
    path = ws.root / source.relative
    if not path.is_file():
        raise source.error(ErrorCode.MISSING_FILE, "file is missing")
    with path.open("rb") as handle:
        return tuple(_header_fields(handle.readline(_HEADER_LIMIT), source, expected))


def _header_fields(line: bytes, source: CsvFile, expected: str) -> list[str]:
    try:
        text = line.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError as exc:
        raise source.error(
            ErrorCode.PARSE_ERROR, "header is not valid UTF-8", reason=str(exc)
        ) from exc
    if not text.strip():
        raise source.error(ErrorCode.BAD_FORMAT, f"file is empty; expected a header {expected}")
    try:
        found = next(csv.reader([text.rstrip("\r\n")], strict=True))
    except csv.Error as exc:
        raise source.error(
            ErrorCode.PARSE_ERROR, "header cannot be parsed", reason=str(exc)
        ) from exc
    return found


def _read_body(path: str, source: CsvFile, header: tuple[str, ...]) -> pa.Table:
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=True),
            convert_options=convert,
        )
    except pa.ArrowInvalid as exc:
        raise source.error(
            ErrorCode.PARSE_ERROR, "cannot be parsed as CSV", reason=str(exc)
        ) from exc


def _string_data(chunk: pa.Array) -> npt.NDArray[np.uint8]:
    """The UTF-8 bytes of all values of a string chunk, without copying."""
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)
    start, stop = offsets[chunk.offset], offsets[chunk.offset + len(chunk)]
    data = chunk.buffers()[2]
    if data is None:
        return np.zeros(0, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)[start:stop]


def _refuse_line_breaks(column: pa.ChunkedArray, source: CsvFile, name: str) -> None:
    """A value holding CR or LF almost always means an unterminated quote swallowed rows."""
    for chunk in column.chunks:
        data = _string_data(chunk)
        if len(data) and data.min() <= 13 and np.any((data == 10) | (data == 13)):
            rows = _rows_where(pc.match_substring_regex(column, r"[\r\n]"))
            raise source.error(
                ErrorCode.PARSE_ERROR,
                f"a {name} value contains a line break (unterminated quote?) at row {rows[0]}",
                column=name,
                rows=rows,
            )


def _has_empty(column: pa.ChunkedArray) -> bool:
    for chunk in column.chunks:
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)
        if np.any(np.diff(offsets[chunk.offset : chunk.offset + len(chunk) + 1]) == 0):
            return True
    return False


def _refuse_empty(
    column: pa.ChunkedArray, ids: pa.ChunkedArray, source: CsvFile, name: str
) -> None:
    if _has_empty(column):
        rows = _rows_where(pc.equal(pc.binary_length(column), 0))
        raise source.error(
            ErrorCode.BAD_FORMAT,
            f"empty {name} at row {rows[0]} (rows are numbered from 1 after the header)",
            column=name,
            rows=rows,
            ids=[ids[row - 1].as_py() for row in rows],
        )


def refuse_empty_values(column: Column, source: CsvFile) -> None:
    """BAD_FORMAT if any value is the empty string."""
    _refuse_empty(column.values, column.ids, source, column.header[1])


def _rows_where(mask: pa.ChunkedArray | pa.Array) -> list[int]:
    """1-based data row numbers of the first few true entries of a boolean mask."""
    hits = np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))
    return [int(i) + 1 for i in hits[:EXAMPLES]]


def align(gt_ids: pa.ChunkedArray, pred_ids: pa.ChunkedArray) -> IntArray | None:
    """For every gt row, the pred row with the same id; ``None`` if the id columns are identical.

    Raises BAD_FORMAT for duplicate ids in either file and MISMATCH for ids in one file only.
    One lookup in the common case: if every gt row is hit by exactly one pred row and no pred id
    is unknown, neither file can hold a duplicate (a repeated gt id's later rows are never hit).
    Integer ids are looked up with NumPy (``tabular_ints``), other ids with pyarrow's hashing
    (a NumPy hash table over the id bytes was tried too: no faster in CPU time).
    """
    if gt_ids.equals(pred_ids):
        if not tabular_ints.all_distinct(gt_ids):
            _refuse_duplicates(gt_ids, GT)
        return None
    n_gt = len(gt_ids)
    found = tabular_ints.positions(gt_ids, pred_ids)
    if found is None:
        position = pc.index_in(pred_ids, value_set=gt_ids)  # gt row of each pred row, or null
        found = np.asarray(pc.fill_null(position, -1).to_numpy(), dtype=np.int64)
    extra = int(np.count_nonzero(found < 0))
    hits = np.bincount(found[found >= 0], minlength=n_gt)
    if not extra and bool(np.all(hits == 1)):
        order = np.empty(n_gt, dtype=np.int64)
        order[found] = np.arange(n_gt, dtype=np.int64)
        return order
    _refuse_duplicates(gt_ids, GT)
    if np.any(hits > 1):
        _refuse_duplicates(pred_ids, PRED)
    raise _mismatch(gt_ids, pred_ids, found, np.flatnonzero(hits == 0), extra)


def _strictly_increasing(ids: pa.ChunkedArray) -> bool:
    """Ids sorted without repeats (as generated ids often are): distinct without any hashing."""
    return len(ids) < 2 or bool(pc.all(pc.less(ids[:-1], ids[1:])).as_py())


def _refuse_duplicates(ids: pa.ChunkedArray, source: CsvFile) -> None:
    if _strictly_increasing(ids) or len(pc.unique(ids)) == len(ids):
        return
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    examples = repeated.field("values")[:EXAMPLES].to_pylist()
    raise source.error(
        ErrorCode.BAD_FORMAT,
        f"{len(repeated)} ids appear more than once, e.g. {examples}",
        duplicate_count=len(repeated),
        duplicates=examples,
    )


def _mismatch(
    gt_ids: pa.ChunkedArray,
    pred_ids: pa.ChunkedArray,
    found: IntArray,
    missing: IntArray,
    extra: int,
) -> AutoscorerError:
    missing_ids = gt_ids.take(pa.array(missing[:EXAMPLES])).to_pylist()
    extra_ids = pred_ids.take(pa.array(np.flatnonzero(found < 0)[:EXAMPLES])).to_pylist()
    missing_ids, extra_ids = clip(missing_ids), clip(extra_ids)
    return AutoscorerError(
        ErrorCode.MISMATCH,
        f"{PRED_PATH} does not list the ground-truth ids: {len(missing)} missing "
        f"(e.g. {missing_ids}), {extra} not in the ground truth (e.g. {extra_ids})",
        stage=Stage.VALIDATION,
        details={
            "file": "pred",
            "path": PRED_PATH,
            "side": "participant",
            "missing_count": len(missing),
            "missing": missing_ids,
            "extra_count": extra,
            "extra": extra_ids,
            "gt_rows": len(gt_ids),
            "pred_rows": len(pred_ids),
        },
    )
