"""Parse ``output/pred.json``: a COCO results list ``[{image_id, category_id, bbox, score}]``.

Like pycocotools' ``loadRes`` the file order is kept (it breaks score ties) and a detection's area
is ``w * h``. Unlike ``loadRes`` an empty list is valid (no detections, recall 0). A detection on an
image the ground truth does not declare is a MISMATCH (``loadRes`` asserts on it); an unknown
category id is BAD_FORMAT (pycocotools would silently drop it). Image ids are matched by JSON
value: ``"1"`` and ``1`` differ, ``1.0`` is ``1`` (as in a Python dict).
"""

from __future__ import annotations

from typing import Any

from services.scorer.builtin.coco.data import Detections, GroundTruth
from services.scorer.builtin.coco.records import (
    FAST_PATH_ERRORS,
    MAX_REPORTED,
    bad_format,
    box_array,
    box_problem,
    column,
    id_problem,
    index_array,
    number_array,
    number_problem,
)
from shared.errors import AutoscorerError, ErrorCode, data_error

ID_TYPES = frozenset({int, float, str})
_REQUIRED = ("image_id", "category_id", "bbox", "score")


def parse_detections(raw: object, gt: GroundTruth, *, file: str) -> Detections:
    if not isinstance(raw, list):
        raise bad_format(file, "predictions must be a list of detection objects", [], 0)
    image_index = {v: i for i, v in enumerate(gt.image_ids)}
    category_index = {v: i for i, v in enumerate(gt.category_ids)}
    try:
        boxes = box_array(column(raw, "bbox"))
        score = number_array(column(raw, "score"))
        image = index_array(column(raw, "image_id"), image_index, ID_TYPES)
        category = index_array(column(raw, "category_id"), category_index, ID_TYPES)
        fast_ok = bool((image >= 0).all() and (category >= 0).all())
    except FAST_PATH_ERRORS:
        fast_ok = False
    if not fast_ok:
        raise _detection_error(raw, image_index, category_index, file)
    return Detections(image=image, category=category, boxes=boxes, score=score)


def _detection_error(
    records: list[Any], image_index: dict[Any, int], category_index: dict[Any, int], file: str
) -> AutoscorerError:
    problems: list[tuple[int, str]] = []
    unknown: list[int] = []
    count = 0
    for i, record in enumerate(records):
        reason = _detection_problem(record, category_index)
        if reason:
            count += 1
            if len(problems) < MAX_REPORTED:
                problems.append((i, reason))
        elif record["image_id"] not in image_index:
            unknown.append(i)
    if problems or not unknown:
        return bad_format(file, "malformed detections", problems, count)
    return data_error(
        ErrorCode.MISMATCH,
        f"{file}: {len(unknown)} detections are on images the ground truth does not have, e.g. "
        + ", ".join(repr(records[i]["image_id"])[:100] for i in unknown[:MAX_REPORTED]),
        file=file,
        indices=unknown[:MAX_REPORTED],
        image_ids=[records[i]["image_id"] for i in unknown[:MAX_REPORTED]],
        count=len(unknown),
    )


def _detection_problem(record: Any, category_index: dict[Any, int]) -> str | None:
    if not isinstance(record, dict):
        return "not an object"
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    category = record["category_id"]
    return (
        box_problem(record["bbox"])
        or number_problem(record["score"], "score")
        or id_problem(record["image_id"], "image_id", ID_TYPES)
        or id_problem(category, "category_id", ID_TYPES)
        or (None if category in category_index else f"unknown category_id {category!r}")
    )
