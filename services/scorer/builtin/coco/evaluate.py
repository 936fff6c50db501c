"""The whole evaluation (bbox or segm): what ``COCOeval.evaluate()`` + ``accumulate()`` compute."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.scorer.builtin.coco.accumulate import accumulate
from services.scorer.builtin.coco.data import (
    BoolArray,
    CategoryId,
    Detections,
    FloatArray,
    GroundTruth,
    IntArray,
)
from services.scorer.builtin.coco.masks import MaskSet
from services.scorer.builtin.coco.match import greedy_match
from services.scorer.builtin.coco.pairs import box_pair_iou, candidate_pairs
from services.scorer.builtin.coco.params import EvalParams, coco_recall_thresholds
from services.scorer.builtin.coco.ranked import group_key, rank_detections


@dataclass(frozen=True, slots=True)
class CocoEvaluation:
    """``COCOeval.eval``: precision (T, R, K, A, M) and recall (T, K, A, M), -1 where undefined."""

    params: EvalParams
    category_ids: tuple[CategoryId, ...]
    category_keys: tuple[str, ...]
    precision: FloatArray
    recall: FloatArray


def evaluate(
    gt: GroundTruth, dt: Detections, params: EvalParams, masks: MaskSet | None = None
) -> CocoEvaluation:
    """Boxes are compared by box IoU, or, given ``masks`` (``iouType="segm"``), by mask IoU."""
    selected = _selected_categories(gt, params)
    category_map = np.full(len(gt.category_ids), -1, dtype=np.int64)
    category_map[selected] = np.arange(len(selected))
    thresholds = np.asarray(params.iou_thresholds, dtype=np.float64)
    bounds = params.area_bounds()

    dets = rank_detections(dt, category_map, max(params.max_dets))
    gt_idx, gt_group = _sorted_ground_truth(gt, category_map)
    crowd = gt.iscrowd[gt_idx]
    gt_ignore = _gt_ignore(gt.area[gt_idx], crowd, bounds)
    det_order = np.argsort(dets.rank, kind="stable")
    min_iou = float(min(thresholds.min(), 1 - 1e-10))
    if masks is None:
        iou_of = box_pair_iou(dets.boxes, gt.boxes[gt_idx], crowd)
    else:
        iou_of = masks.pair_iou(dets.source, dets.group, gt_idx, gt_group, crowd)
    pairs = candidate_pairs(det_order, dets.group, iou_of, gt_group=gt_group, min_iou=min_iou)
    matched = greedy_match(pairs, dets.rank, gt_ignore, crowd, thresholds)

    npig = _count_not_ignored(category_map[gt.category[gt_idx]], gt_ignore, len(selected))
    precision, recall = accumulate(
        dets,
        matched,
        gt_ignore=gt_ignore,
        gt_zero_id=gt.id_is_zero[gt_idx],
        npig=npig,
        area_bounds=bounds,
        max_dets=params.max_dets,
        recall_thresholds=coco_recall_thresholds(),
    )
    return CocoEvaluation(
        params=params,
        category_ids=tuple(gt.category_ids[i] for i in selected),
        category_keys=tuple(gt.category_keys[i] for i in selected),
        precision=precision,
        recall=recall,
    )


def _selected_categories(gt: GroundTruth, params: EvalParams) -> IntArray:
    if params.category_ids is None:
        return np.arange(len(gt.category_ids), dtype=np.int64)
    wanted = set(params.category_ids)
    return np.array([i for i, c in enumerate(gt.category_ids) if c in wanted], dtype=np.int64)


def _sorted_ground_truth(gt: GroundTruth, category_map: IntArray) -> tuple[IntArray, IntArray]:
    """Indices of evaluated gt sorted by (category, image, file order), and their group keys."""
    category = category_map[gt.category]
    keep = np.flatnonzero(category >= 0)
    group = group_key(category[keep], gt.image[keep])
    order = np.argsort(group, kind="stable")
    return keep[order], group[order]


def _gt_ignore(area: FloatArray, crowd: BoolArray, bounds: FloatArray) -> BoolArray:
    """(G, A): crowd, or area outside the range (bounds inclusive)."""
    outside = (area[:, None] < bounds[None, :, 0]) | (area[:, None] > bounds[None, :, 1])
    return outside | crowd[:, None]


def _count_not_ignored(category: IntArray, gt_ignore: BoolArray, n_categories: int) -> IntArray:
    """(K, A) ``npig``: ground truths that count towards recall."""
    n_area = gt_ignore.shape[1]
    counts = [np.bincount(category[~ignored], minlength=n_categories) for ignored in gt_ignore.T]
    return np.stack(counts, axis=1).reshape(n_categories, n_area).astype(np.int64)
