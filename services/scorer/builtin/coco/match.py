"""pycocotools' greedy matching (``COCOeval.evaluateImg``), for all images at once.

Within one image and category pycocotools walks detections by descending score; each takes the
free ground truth with the highest IoU >= the threshold (on a tie the later one), preferring any
non-ignored ground truth over an ignored one; a crowd ground truth never becomes taken. Only the
detections of the *same* image and category compete, so step ``r`` handles the ``r``-th detection
of every image and category together, for every area range and IoU threshold: at most
``max_dets`` vectorised steps instead of a Python loop per detection.
"""

from __future__ import annotations

import itertools

import numpy as np

from services.scorer.builtin.coco.data import BoolArray, FloatArray, IntArray, MatchArray
from services.scorer.builtin.coco.pairs import Pairs

_PRIORITY = np.int64(1) << 32  # priority = ignored * _PRIORITY + position in the pair order
_NONE = np.int64(1) << 62


def greedy_match(
    pairs: Pairs,
    det_rank: IntArray,
    gt_ignore: BoolArray,
    gt_crowd: BoolArray,
    thresholds: FloatArray,
) -> MatchArray:
    """The ground truth each detection matches, ``(A, T, D)``, -1 for none.

    ``gt_ignore`` is ``(G, A)``: crowd or outside area range ``a``. Pairs must be ordered by
    detection rank, then as :class:`Pairs` describes.
    """
    n_det, n_area, n_thr = len(det_rank), gt_ignore.shape[1], len(thresholds)
    matched = np.full((n_area, n_thr, n_det), -1, dtype=np.int32)
    taken = np.zeros((len(gt_ignore), n_area, n_thr), dtype=np.bool_)
    effective = np.minimum(thresholds, 1 - 1e-10)
    pair_rank = det_rank[pairs.det]
    bounds = np.searchsorted(pair_rank, np.arange(int(pair_rank.max(initial=-1)) + 2))
    for start, stop in itertools.pairwise(bounds.tolist()):
        if stop > start:
            part = slice(start, stop)
            _step(
                pairs,
                part,
                gt_ignore=gt_ignore,
                gt_crowd=gt_crowd,
                effective=effective,
                taken=taken,
                matched=matched,
            )
    return matched


def _step(
    pairs: Pairs,
    part: slice,
    *,
    gt_ignore: BoolArray,
    gt_crowd: BoolArray,
    effective: FloatArray,
    taken: BoolArray,
    matched: MatchArray,
) -> None:
    """Match one detection per image and category (the pairs in ``part``), updating ``taken``."""
    dets, gts = pairs.det[part], pairs.gt[part]
    starts = np.flatnonzero(np.concatenate(([True], dets[1:] != dets[:-1])))
    position = np.arange(len(dets)) - np.repeat(starts, np.diff(np.append(starts, len(dets))))
    eligible = (~taken[gts] | gt_crowd[gts, None, None]) & (pairs.iou[part, None] >= effective)[
        :, None, :
    ]
    priority = gt_ignore[gts] * _PRIORITY + position[:, None]  # (P, A)
    best = np.minimum.reduceat(np.where(eligible, priority[:, :, None], _NONE), starts, axis=0)
    hit = best < _NONE
    chosen = np.where(hit, gts[np.where(hit, starts[:, None, None] + best % _PRIORITY, 0)], -1)
    matched[:, :, dets[starts]] = chosen.transpose(1, 2, 0)
    seg, area, thr = np.nonzero(hit)
    taken[chosen[seg, area, thr], area, thr] = True
