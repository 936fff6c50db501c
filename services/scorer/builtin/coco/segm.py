"""Ground truth and detections with instance masks (``iouType="segm"``), as the box parsers see
them plus their masks.

Each annotation's and detection's ``segmentation`` becomes a validated compressed RLE
(:mod:`.masks`); the records then go through the box parsers (:mod:`.ground_truth`,
:mod:`.detections`) with a ``bbox`` derived from the mask, so ids, categories, crowd flags, scores
and their errors are handled exactly as for ``detection_map``. Areas follow pycocotools:

* ground truth: the annotation's ``area`` if given (pycocotools requires it), else the mask's;
* detections: ``loadRes`` takes the mask's area, except when the *first* result carries a
  non-empty ``bbox``: then it treats the file as box results and every area is that box's
  ``w * h`` (detectron2 and mmdetection write such files). Reproduced, so that the small, medium
  and large stats match pycocotools on them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from services.scorer.builtin.coco.data import Detections, GroundTruth
from services.scorer.builtin.coco.detections import parse_detections
from services.scorer.builtin.coco.ground_truth import parse_ground_truth
from services.scorer.builtin.coco.masks import (
    MaskSet,
    Rle,
    compressed_areas,
    mask_boxes,
    to_rles,
)
from services.scorer.builtin.coco.records import MAX_REPORTED, bad_format

Sizes = dict[Any, tuple[int, int]]


def parse_segm(
    gt_raw: object, dt_raw: object, *, gt_file: str, dt_file: str
) -> tuple[GroundTruth, Detections, MaskSet]:
    gt_records, sizes = _annotations(gt_raw, gt_file)
    _sizes_from_masks(gt_records, sizes)
    gt_rles, gt_area, gt_boxes = _masks(gt_records, sizes, gt_file, "ground-truth")
    with_masks = [
        _with(r, bbox=b, area=r.get("area", a))
        for r, b, a in zip(gt_records, gt_boxes, gt_area, strict=True)
    ]
    gt = parse_ground_truth(_replace_annotations(gt_raw, with_masks), file=gt_file)
    if not isinstance(dt_raw, list):
        raise bad_format(dt_file, "predictions must be a list of detection objects", [], 0)
    dt_rles, dt_area, dt_boxes = _masks(dt_raw, sizes, dt_file, "predicted")
    box_results = bool(dt_raw) and isinstance(dt_raw[0], dict) and dt_raw[0].get("bbox", [])
    records = (
        dt_raw if box_results else [_with(r, bbox=b) for r, b in zip(dt_raw, dt_boxes, strict=True)]
    )
    dt = parse_detections(records, gt, file=dt_file)
    if not box_results:
        dt = dataclasses.replace(dt, area=np.asarray(dt_area, dtype=np.float64))
    return gt, dt, MaskSet(gt=gt_rles, dt=dt_rles)


def _annotations(raw: object, file: str) -> tuple[list[Any], Sizes]:
    """The annotation records and the images' (height, width) where the ground truth has them."""
    if isinstance(raw, list):
        return raw, {}
    if not isinstance(raw, dict) or not isinstance(raw.get("annotations"), list):
        raise bad_format(file, "ground truth must be a COCO object or a list of annotations", [], 0)
    images = raw.get("images")
    sizes: Sizes = {}
    for image in images if isinstance(images, list) else []:
        if isinstance(image, dict) and _hashable(image.get("id")):
            height, width = image.get("height"), image.get("width")
            if type(height) is int and type(width) is int:
                sizes[image["id"]] = (height, width)
    return raw["annotations"], sizes


def _sizes_from_masks(records: list[Any], sizes: Sizes) -> None:
    """An image without a declared height and width takes its first RLE's size, so that every
    other mask on it, ground truth or prediction, must have that size too: ``maskUtils.iou``
    gives -1 for masks of different sizes (never a match), so such a mask is a mistake."""
    for record in records:
        if not isinstance(record, dict) or not _hashable(image := record.get("image_id")):
            continue
        segm = record.get("segmentation")
        size = segm.get("size") if isinstance(segm, dict) else None
        if isinstance(size, list) and len(size) == 2 and all(type(v) is int for v in size):
            sizes.setdefault(image, (size[0], size[1]))


def _hashable(value: object) -> bool:
    return isinstance(value, int | str | float)


def _with(record: Any, **fields: Any) -> Any:
    return {**record, **fields} if isinstance(record, dict) else record


def _replace_annotations(raw: object, records: list[Any]) -> object:
    return {**raw, "annotations": records} if isinstance(raw, dict) else records


def _masks(
    records: list[Any], sizes: Sizes, file: str, what: str
) -> tuple[list[Rle], list[float], list[list[float]]]:
    """Compressed RLEs, areas and boxes of every record's ``segmentation``; BAD_FORMAT naming
    the first few bad records (a missing or malformed segmentation, a bad RLE string)."""
    problems: list[tuple[int, str]] = []
    count = 0

    def problem(index: int, reason: str) -> None:
        nonlocal count
        count += 1
        if len(problems) < MAX_REPORTED:
            problems.append((index, reason))

    segmentations, image_sizes = [], []
    for i, given in enumerate(records):
        record = given if isinstance(given, dict) else {}
        if "segmentation" not in record:
            problem(i, "not an object with a segmentation")
        segmentations.append(record.get("segmentation"))
        image = record.get("image_id")
        image_sizes.append(sizes.get(image) if _hashable(image) else None)
    rles = to_rles(segmentations, image_sizes, problem) if not problems else []
    if problems:
        raise bad_format(file, f"malformed {what} segmentations", problems, count)
    areas, bad = compressed_areas(rles)
    if len(bad):
        shown = [
            (int(i), "RLE counts string is malformed or does not cover height * width")
            for i in bad[:MAX_REPORTED]
        ]
        raise bad_format(file, f"malformed {what} segmentations", shown, len(bad))
    return rles, areas.tolist(), mask_boxes(rles).tolist()
