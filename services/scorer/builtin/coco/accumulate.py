"""pycocotools' ``COCOeval.accumulate``: precision at 101 recall points, and final recall.

Per category, area range and ``maxDets`` pycocotools concatenates each image's first ``maxDet``
detections (images in id order), stable-sorts them by score, and builds cumulative true and false
positives. Here every category is one segment of a single array per (area, maxDets) and all IoU
thresholds are rows, so each step is one numpy call. The two per-segment operations are exact:

* ``searchsorted(recall, recThrs)`` becomes an integer search: ``recall = tp / npig`` rises with
  ``tp``, so the first index reaching a threshold is the first with ``tp >= v``, where ``v`` is the
  smallest count whose float quotient reaches it.
* the precision envelope (running max from the right) is only read at those indices, so it is the
  max over ``[index, segment end)``: a ``maximum.reduceat`` over the pieces between consecutive
  indices, then a running max over the 101 pieces.
"""

from __future__ import annotations

import numpy as np

from services.scorer.builtin.coco.data import BoolArray, FloatArray, IntArray, MatchArray
from services.scorer.builtin.coco.ranked import RankedDetections


def accumulate(
    dets: RankedDetections,
    matched: MatchArray,
    *,
    gt_ignore: BoolArray,
    gt_zero_id: BoolArray,
    npig: IntArray,
    area_bounds: FloatArray,
    max_dets: tuple[int, ...],
    recall_thresholds: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """``precision`` (T, R, K, A, M) and ``recall`` (T, K, A, M); -1 where a setting has no gt."""
    n_thr, n_cat, n_area = matched.shape[1], npig.shape[0], npig.shape[1]
    shape = (n_thr, len(recall_thresholds), n_cat, n_area, len(max_dets))
    precision, recall = -np.ones(shape), -np.ones((n_thr, n_cat, n_area, len(max_dets)))
    needed = _min_true_positives(npig, recall_thresholds)
    order = np.lexsort((dets.rank, dets.image, -dets.score, dets.category))
    ignore = np.vstack([gt_ignore, np.zeros((1, n_area), dtype=np.bool_)])  # row -1: no match
    zero_id = np.append(gt_zero_id, False)
    for m, max_det in enumerate(max_dets):
        chosen = order[dets.rank[order] < max_det]
        counts = np.bincount(dets.category[chosen], minlength=n_cat)
        outside = _outside(dets.area[chosen], area_bounds)
        for a in range(n_area):
            hits = np.take(matched[a], chosen, axis=1)  # C order: rows are IoU thresholds
            tp, fp = _tp_fp(hits, ignore[:, a], zero_id, outside[:, a])
            p, r = _curves(tp, fp, counts, npig[:, a], needed[:, a])
            has_gt = npig[:, a] > 0
            precision[:, :, :, a, m] = np.where(has_gt, p, -1.0)
            recall[:, :, a, m] = np.where(has_gt, r, -1.0)
    return precision, recall


def _outside(area: FloatArray, bounds: FloatArray) -> BoolArray:
    return (area[:, None] < bounds[None, :, 0]) | (area[:, None] > bounds[None, :, 1])


def _tp_fp(
    matched: MatchArray, ignore: BoolArray, zero_id: BoolArray, outside: BoolArray
) -> tuple[BoolArray, BoolArray]:
    """(T, N) true/false positives; ignored detections are neither.

    ``dtMatches`` holds the gt *id*, so a match to an annotation with id 0 counts as no match.
    """
    hit = matched >= 0
    counted = hit & ~zero_id[matched]
    det_ignored = ignore[matched] | (~counted & outside[None, :])
    return counted & ~det_ignored, ~counted & ~det_ignored


def _min_true_positives(npig: IntArray, recall_thresholds: FloatArray) -> IntArray:
    """(K, A, R): smallest integer ``v`` with ``float(v / npig) >= recThr``."""
    n = np.maximum(npig, 1).astype(np.float64)[..., None]
    v = np.maximum(np.ceil(recall_thresholds * n) - 2, 0)
    for _ in range(6):
        v = v + (v / n < recall_thresholds)
    needed: IntArray = v.astype(np.int64)
    return needed


def _segment_cumsum(x: BoolArray, starts: IntArray, counts: IntArray) -> IntArray:
    """Cumulative sums along each row that restart at every category segment."""
    total = x.astype(np.int64)  # a cast first, then an in-place cumsum, is ~2x faster
    np.cumsum(total, axis=1, out=total)
    before = np.where(starts > 0, total[:, np.maximum(starts - 1, 0)], 0) if x.shape[1] else 0
    total -= np.repeat(np.broadcast_to(before, (x.shape[0], len(starts))), counts, axis=1)
    return total


def _curves(
    tp: BoolArray, fp: BoolArray, counts: IntArray, npig: IntArray, needed: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Precision (T, R, K) at the recall thresholds and recall (T, K), per category segment."""
    n_thr, n = tp.shape
    n_cat, n_rec = needed.shape
    ends = np.cumsum(counts)
    starts = ends - counts
    tp_sum = _segment_cumsum(tp, starts, counts)
    tp_f = tp_sum.astype(np.float64)
    pr = tp_f / (_segment_cumsum(fp, starts, counts).astype(np.float64) + tp_f + np.spacing(1))
    last = tp_sum[:, np.maximum(ends - 1, 0)] if n else np.zeros((n_thr, n_cat), dtype=np.int64)
    recall = np.where(counts > 0, last, 0) / np.maximum(npig, 1)

    segment = np.arange(n_thr)[:, None] * n_cat + np.arange(n_cat)[None, :]  # (T, K)
    key = (np.repeat(segment, counts, axis=1) << 32) + tp_sum  # sorted: segment, then tp
    target = (segment[:, :, None] << 32) + needed[None, :, :]
    index = np.searchsorted(key.ravel(), target.ravel(), side="left").reshape(target.shape)
    seg_end = np.arange(n_thr)[:, None] * n + ends[None, :]
    bounds = np.concatenate([index, seg_end[:, :, None]], axis=2)
    pieces = np.maximum.reduceat(np.append(pr.ravel(), 0.0), bounds.ravel())
    pieces = pieces.reshape(bounds.shape)[:, :, :n_rec]
    pieces[bounds[:, :, 1:] <= bounds[:, :, :-1]] = 0.0
    envelope = np.maximum.accumulate(pieces[:, :, ::-1], axis=2)[:, :, ::-1]
    precision = np.where(index < seg_end[:, :, None], envelope, 0.0)
    return precision.transpose(0, 2, 1), recall
