"""Parse ``input/gt.json``: a COCO annotation object, or the README's simplified list of boxes.

COCO object: ``{"images": [{"id"}], "annotations": [...], "categories": [{"id", "name"}]}``.
Simplified list: ``[{"image_id", "category_id", "bbox"}, ...]``; its images and categories are the
ones that appear. Either way an annotation needs ``image_id``, ``category_id`` and ``bbox``
``[x, y, w, h]``; ``area`` defaults to ``w * h``, ``iscrowd`` to 0 and ``id`` is optional. As in
pycocotools, an ``ignore`` key has no effect: only ``iscrowd`` makes a box ignored.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from services.scorer.builtin.coco.data import CategoryId, GroundTruth, ImageId
from services.scorer.builtin.coco.records import (
    FAST_PATH_ERRORS,
    MAX_REPORTED,
    box_array,
    box_problem,
    column,
    crowd_flags,
    id_problem,
    index_array,
    number_problem,
    optional_areas,
    optional_column,
)
from services.scorer.builtin.coco.records import bad_format as _bad
from shared.errors import AutoscorerError

ID_TYPES = frozenset({int, str})
_REQUIRED = ("image_id", "category_id", "bbox")


def parse_ground_truth(raw: object, *, file: str) -> GroundTruth:
    if isinstance(raw, dict):
        return _from_coco(raw, file)
    if isinstance(raw, list):
        return _from_list(raw, file)
    raise _bad(file, "ground truth must be a COCO object or a list of boxes", [], 0)


def _from_coco(raw: dict[str, Any], file: str) -> GroundTruth:
    for key in ("images", "annotations", "categories"):
        if not isinstance(raw.get(key), list):
            raise _bad(file, f"a COCO ground truth needs a list under {key!r}", [], 0)
    image_ids = _sorted_ids(_id_column(raw["images"], file, "images"), file, "image")
    category_list = raw["categories"]
    category_ids = _sorted_ids(_id_column(category_list, file, "categories"), file, "category")
    names = {c["id"]: c.get("name") for c in category_list}
    category_names = [names[c] for c in category_ids]
    return _assemble(raw["annotations"], image_ids, category_ids, category_names, file)


def _from_list(records: list[Any], file: str) -> GroundTruth:
    try:
        image_values = column(records, "image_id")
        category_values = column(records, "category_id")
    except FAST_PATH_ERRORS:
        raise _annotation_error(records, None, None, file) from None
    image_ids = _sorted_ids(image_values, file, "image", records)
    category_ids = _sorted_ids(category_values, file, "category", records)
    return _assemble(records, image_ids, category_ids, [None] * len(category_ids), file)


def _id_column(items: list[Any], file: str, what: str) -> list[Any]:
    bad = [i for i, item in enumerate(items) if not isinstance(item, dict) or "id" not in item]
    if bad:
        problems = [(i, "no 'id'") for i in bad]
        raise _bad(file, f"every entry of {what!r} needs an 'id'", problems, len(bad))
    return [item["id"] for item in items]


def _sorted_ids(
    values: list[Any], file: str, what: str, records: list[Any] | None = None
) -> list[Any]:
    """Unique ids in pycocotools' order (``np.unique``); one type (int or str) for all."""
    checks = ((i, id_problem(v, f"{what} id", ID_TYPES)) for i, v in enumerate(values))
    problems = [(i, p) for i, p in checks if p]
    if problems:
        if records is not None:
            raise _annotation_error(records, None, None, file)
        raise _bad(file, f"{what} ids must be integers or strings", problems, len(problems))
    kinds = set(map(type, values))
    if len(kinds) > 1:
        raise _bad(file, f"{what} ids mix integers and strings", [], 0)
    return sorted(set(values))


def _category_keys(ids: list[CategoryId], names: list[Any]) -> tuple[str, ...]:
    """Category names when every category has a distinct one, else the ids as strings."""
    if all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names):
        return tuple(names)
    return tuple(str(i) for i in ids)


def _assemble(
    records: list[Any],
    image_ids: list[ImageId],
    category_ids: list[CategoryId],
    names: list[Any],
    file: str,
) -> GroundTruth:
    image_index = {v: i for i, v in enumerate(image_ids)}
    category_index = {v: i for i, v in enumerate(category_ids)}
    try:
        boxes = box_array(column(records, "bbox"))
        image = index_array(column(records, "image_id"), image_index, ID_TYPES)
        category = index_array(column(records, "category_id"), category_index, ID_TYPES)
        area = optional_areas(optional_column(records, "area"), boxes)
        iscrowd = crowd_flags(optional_column(records, "iscrowd"))
        ids = optional_column(records, "id")
        fast_ok = bool((image >= 0).all() and (category >= 0).all()) and _ids_ok(ids)
    except FAST_PATH_ERRORS:
        fast_ok = False
    if not fast_ok:
        raise _annotation_error(records, image_index, category_index, file)
    return GroundTruth(
        image_ids=tuple(image_ids),
        category_ids=tuple(category_ids),
        category_keys=_category_keys(category_ids, names),
        image=image,
        category=category,
        boxes=boxes,
        area=area,
        iscrowd=iscrowd,
        id_is_zero=np.array([v == 0 for v in ids], dtype=np.bool_).reshape(len(ids)),
    )


def _ids_ok(ids: list[Any]) -> bool:
    present = [v for v in ids if v is not None]
    return all(type(v) is int for v in present) and len(set(present)) == len(present)


def _annotation_error(
    records: list[Any],
    image_index: dict[Any, int] | None,
    category_index: dict[Any, int] | None,
    file: str,
) -> AutoscorerError:
    problems: list[tuple[int, str]] = []
    count = 0
    seen: Counter[Any] = Counter()
    for i, record in enumerate(records):
        reason = _annotation_problem(record, image_index, category_index, seen)
        if reason:
            count += 1
            if len(problems) < MAX_REPORTED:
                problems.append((i, reason))
    return _bad(file, "malformed ground-truth annotations", problems, count)


def _annotation_problem(
    record: Any,
    image_index: dict[Any, int] | None,
    category_index: dict[Any, int] | None,
    seen: Counter[Any],
) -> str | None:
    if not isinstance(record, dict):
        return "not an object"
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    return (
        box_problem(record["bbox"])
        or _known(record["image_id"], "image_id", image_index)
        or _known(record["category_id"], "category_id", category_index)
        or _optional_fields(record, seen)
    )


def _known(value: Any, name: str, index: dict[Any, int] | None) -> str | None:
    problem = id_problem(value, name, ID_TYPES)
    if problem or index is None:
        return problem
    return None if value in index else f"{name} {value!r} is not declared in the ground truth"


def _optional_fields(record: dict[str, Any], seen: Counter[Any]) -> str | None:
    area, crowd, ann_id = record.get("area"), record.get("iscrowd"), record.get("id")
    if area is not None and (problem := number_problem(area, "area")):
        return problem
    if area is not None and area < 0:
        return "area is negative"
    if crowd is not None and (type(crowd) not in (int, bool) or crowd not in (0, 1)):
        return "iscrowd must be 0 or 1"
    if ann_id is None:
        return None
    if type(ann_id) is not int:
        return "id must be an integer"
    seen[ann_id] += 1
    return f"duplicate annotation id {ann_id}" if seen[ann_id] > 1 else None
