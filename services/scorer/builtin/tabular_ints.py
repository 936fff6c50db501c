"""Integer ids (``1, 2, 3, ...``: the most common kind) aligned with NumPy, without string hashing.

Ids stay strings everywhere else; this is only a faster way to the same answer. It applies when
every id in a column is the canonical decimal text of a non-negative int64 (ASCII digits only, no
leading zero: ``"007"``, ``"+1"``, ``"-1"``, ``"0x1f"`` or ``"١٢"`` do not qualify), so two ids are
equal exactly when their integers are, and when the integers of both files fall in a range at
most a few times the row count, so a direct-address table (``np.bincount`` and one scatter) does
the work of a hash table. Otherwise every function returns ``None`` and the caller uses pyarrow.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

I64 = npt.NDArray[np.int64]
SPAN_PER_ROW = 4  # the table may be this many times larger than the larger file


def as_ints(ids: pa.ChunkedArray) -> I64 | None:
    """The ids as int64 if every one is the canonical text of its integer, else ``None``."""
    if not pc.all(pc.ascii_is_decimal(ids)).as_py() or any(map(_leading_zero, ids.chunks)):
        return None
    try:
        ints = pc.cast(ids, pa.int64())
    except pa.ArrowInvalid:  # beyond the int64 range
        return None
    return np.asarray(ints.to_numpy(), dtype=np.int64)


def _leading_zero(chunk: pa.Array) -> bool:
    """Whether some value of a string chunk longer than one byte starts with ``0``."""
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)
    offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
    data = chunk.buffers()[2]
    if data is None:
        return False
    first = np.frombuffer(data, dtype=np.uint8)[offsets[:-1][np.diff(offsets) > 1]]
    return bool(np.any(first == ord("0")))


def _span(*columns: I64) -> tuple[int, int] | None:
    """The smallest id and the table size, if the ids are dense enough for a table."""
    low = min(int(column.min()) for column in columns)
    high = max(int(column.max()) for column in columns)
    size = high - low + 1  # Python ints: no int64 overflow for extreme ids
    limit = SPAN_PER_ROW * max(len(column) for column in columns) + 1024
    return (low, size) if size <= limit else None


def all_distinct(ids: pa.ChunkedArray) -> bool | None:
    """``True`` if the integer ids are distinct; ``None`` if they repeat or this cannot tell."""
    ints = as_ints(ids)
    span = None if ints is None else _span(ints)
    if ints is None or span is None:
        return None
    low, size = span
    return True if int(np.bincount(ints - low, minlength=size).max()) <= 1 else None


def positions(gt_ids: pa.ChunkedArray, pred_ids: pa.ChunkedArray) -> I64 | None:
    """For every pred row, the gt row with the same id or -1; ``None`` if this path cannot tell.

    A repeated gt id keeps its last row here, so its other rows are never found: the caller
    sees gt rows without a match and looks for duplicates exactly, as it does after pyarrow.
    """
    gt = as_ints(gt_ids)
    pred = None if gt is None else as_ints(pred_ids)
    span = None if gt is None or pred is None else _span(gt, pred)
    if gt is None or pred is None or span is None:
        return None
    low, size = span
    row_of = np.full(size, -1, dtype=np.int64)
    row_of[gt - low] = np.arange(len(gt), dtype=np.int64)
    found: I64 = row_of[pred - low]
    return found
