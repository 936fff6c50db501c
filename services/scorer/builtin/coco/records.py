"""Columns out of lists of JSON records: a fast path, and a slow path that names the culprits.

The fast functions turn a whole column into a numpy array and raise :class:`RecordError` (or the
``KeyError``/``TypeError`` of a malformed record) at the first doubt. Only then does the caller
walk the records one by one with the ``*_problem`` functions to report which ones are wrong and
why, so valid files never pay for per-record checks in Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import chain
from typing import Any

import numpy as np

from services.scorer.builtin.coco.data import BoolArray, FloatArray, IntArray
from shared.errors import AutoscorerError, ErrorCode, data_error

NUMBER_TYPES = frozenset({int, float})
MAX_REPORTED = 5
FAST_PATH_ERRORS = (KeyError, TypeError, AttributeError, ValueError, OverflowError)


class RecordError(ValueError):
    """Some record in a column is malformed; the slow path finds out which."""


def column(records: list[Any], key: str) -> list[Any]:
    return [record[key] for record in records]


def optional_column(records: list[Any], key: str) -> list[Any]:
    return [record.get(key) for record in records]


def types_within(values: list[Any], allowed: frozenset[type]) -> bool:
    return set(map(type, values)) <= allowed


def box_array(values: list[Any]) -> FloatArray:
    """(N, 4) finite boxes with non-negative width and height."""
    if not values:
        return np.zeros((0, 4), dtype=np.float64)
    if set(map(len, values)) != {4}:
        raise RecordError("bbox")
    if not types_within(list(chain.from_iterable(values)), NUMBER_TYPES):
        raise RecordError("bbox")
    boxes = np.array(values, dtype=np.float64)
    if not np.isfinite(boxes).all() or (boxes[:, 2:] < 0).any():
        raise RecordError("bbox")
    return boxes


def number_array(values: list[Any]) -> FloatArray:
    if not types_within(values, NUMBER_TYPES):
        raise RecordError("number")
    numbers = np.array(values, dtype=np.float64).reshape(len(values))
    if not np.isfinite(numbers).all():
        raise RecordError("number")
    return numbers


def index_array(values: list[Any], index: Mapping[Any, int], allowed: frozenset[type]) -> IntArray:
    """Positions of ``values`` in ``index``; -1 where unknown."""
    if not types_within(values, allowed):
        raise RecordError("id")
    return np.fromiter((index.get(v, -1) for v in values), dtype=np.int64, count=len(values))


def optional_areas(values: list[Any], boxes: FloatArray) -> FloatArray:
    """Given areas, or ``w * h`` where an annotation has none."""
    missing = np.fromiter((v is None for v in values), dtype=np.bool_, count=len(values))
    given = [v for v in values if v is not None]
    area = boxes[:, 2] * boxes[:, 3]
    if given:
        numbers = number_array(given)
        if (numbers < 0).any():
            raise RecordError("area")
        area[~missing] = numbers
    return area


def crowd_flags(values: list[Any]) -> BoolArray:
    """``iscrowd`` as booleans; absent means 0."""
    if not types_within(values, frozenset({int, bool, type(None)})):
        raise RecordError("iscrowd")
    flags = np.array([0 if v is None else int(v) for v in values], dtype=np.int64)
    if ((flags != 0) & (flags != 1)).any():
        raise RecordError("iscrowd")
    return flags.astype(np.bool_)


def box_problem(value: Any) -> str | None:
    if not isinstance(value, list) or len(value) != 4 or not all(_is_number(v) for v in value):
        return "bbox must be a list of 4 numbers [x, y, w, h]"
    if not all(math.isfinite(v) for v in value):
        return "bbox has a NaN or infinite value"
    if value[2] < 0 or value[3] < 0:
        return "bbox has a negative width or height"
    return None


def number_problem(value: Any, name: str) -> str | None:
    if not _is_number(value):
        return f"{name} must be a number"
    if not math.isfinite(value):
        return f"{name} is NaN or infinite"
    return None


def id_problem(value: Any, name: str, allowed: frozenset[type]) -> str | None:
    if type(value) not in allowed:
        kinds = " or ".join(sorted(t.__name__ for t in allowed))
        return f"{name} must be of type {kinds}, got {type(value).__name__}"
    return None


def _is_number(value: Any) -> bool:
    if type(value) not in NUMBER_TYPES:
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def bad_format(
    file: str, message: str, problems: list[tuple[int, str]], count: int
) -> AutoscorerError:
    """BAD_FORMAT naming the first few offending records."""
    shown = problems[:MAX_REPORTED]
    summary = "; ".join(f"#{i}: {reason}" for i, reason in shown)
    return data_error(
        ErrorCode.BAD_FORMAT,
        f"{file}: {message}" + (f" ({count} bad, e.g. {summary})" if shown else ""),
        file=file,
        indices=[i for i, _ in shown],
        problems=[{"index": i, "reason": reason} for i, reason in shown],
        count=count,
    )
