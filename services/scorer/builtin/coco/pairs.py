"""Candidate (detection, ground truth) pairs: same image and category, IoU high enough to match.

IoU is pycocotools' C ``bbIou`` computed element-wise in float64 with the same operations in the
same order, so values are bit-identical; for a crowd ground truth the union is the detection's
area. Pairs are built in batches of at most ``budget`` so memory stays bounded however many boxes
share an image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.scorer.builtin.coco.data import BoolArray, FloatArray, IntArray

DEFAULT_BUDGET = 1 << 21


@dataclass(frozen=True, slots=True)
class Pairs:
    """Ordered by detection (in ``det_order``), then IoU descending, then ground truth descending.

    That is the order in which pycocotools' greedy loop prefers ground truths: the best IoU, and on
    a tie the later annotation.
    """

    det: IntArray
    gt: IntArray
    iou: FloatArray


def bbox_iou(dt: FloatArray, gt: FloatArray, crowd: BoolArray) -> FloatArray:
    """Element-wise IoU of ``dt[i]`` and ``gt[i]`` (xywh), as ``maskApi.c:bbIou`` computes it."""
    w = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    inter = w * h
    det_area = dt[:, 2] * dt[:, 3]
    union = np.where(crowd, det_area, det_area + gt[:, 2] * gt[:, 3] - inter)
    overlap = (w > 0) & (h > 0)
    iou: FloatArray = np.divide(inter, union, out=np.zeros_like(inter), where=overlap)
    return iou


PairIou = Callable[[IntArray, IntArray], FloatArray]
"""IoU of each (detection, ground truth) pair given as two index arrays of equal length."""


def box_pair_iou(det_boxes: FloatArray, gt_boxes: FloatArray, gt_crowd: BoolArray) -> PairIou:
    return lambda det, gt: bbox_iou(det_boxes[det], gt_boxes[gt], gt_crowd[gt])


def candidate_pairs(
    det_order: IntArray,
    det_group: IntArray,
    iou_of: PairIou,
    *,
    gt_group: IntArray,
    min_iou: float,
    budget: int = DEFAULT_BUDGET,
) -> Pairs:
    """Pairs with IoU >= ``min_iou`` (> 0); ``gt_group`` must be sorted ascending."""
    dets = det_order
    lo = np.searchsorted(gt_group, det_group[dets], side="left")
    counts = np.searchsorted(gt_group, det_group[dets], side="right") - lo
    ends = np.cumsum(counts)
    parts: list[tuple[IntArray, IntArray, FloatArray]] = []
    start = 0
    while start < len(dets):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + budget, side="right")), start + 1)
        sl = slice(start, stop)
        parts.append(_batch(dets[sl], lo[sl], counts[sl], iou_of, min_iou))
        start = stop
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, np.zeros(0, dtype=np.float64))
    det = np.concatenate([p[0] for p in parts])
    gt = np.concatenate([p[1] for p in parts])
    iou = np.concatenate([p[2] for p in parts])
    position = np.empty(int(dets.max()) + 1, dtype=np.int64)
    position[dets] = np.arange(len(dets))
    order = np.lexsort((-iou, position[det]))  # stable: equal IoU keeps the later gt first
    return Pairs(det[order], gt[order], iou[order])


def _batch(
    dets: IntArray, lo: IntArray, counts: IntArray, iou_of: PairIou, min_iou: float
) -> tuple[IntArray, IntArray, FloatArray]:
    """All same-group pairs of ``dets``; ground truths listed last-first within a detection."""
    det = np.repeat(dets, counts)
    offsets = np.arange(len(det)) - np.repeat(np.cumsum(counts) - counts, counts)
    gt = np.repeat(lo + counts - 1, counts) - offsets
    iou = iou_of(det, gt)
    keep = iou >= min_iou
    return det[keep], gt[keep], iou[keep]
