"""Detections in the order pycocotools sees them, cut at ``max_det`` per image and category."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.scorer.builtin.coco.data import Detections, FloatArray, IntArray


@dataclass(frozen=True, slots=True)
class RankedDetections:
    """Sorted by (category, image, score descending, file order); ``rank`` counts from 0 within
    each image and category, and only ranks below ``max_det`` are kept (``computeIoU`` cuts the
    same way, after a stable mergesort by score)."""

    category: IntArray
    image: IntArray
    rank: IntArray
    score: FloatArray
    boxes: FloatArray
    area: FloatArray  # for the area ranges
    source: IntArray  # index in the file's order

    @property
    def group(self) -> IntArray:
        """One key per (category, image), sorted like the ground truth's."""
        return self.category * _GROUP_STRIDE + self.image

    def __len__(self) -> int:
        return len(self.rank)


_GROUP_STRIDE = np.int64(1) << 32


def group_key(category: IntArray, image: IntArray) -> IntArray:
    return category * _GROUP_STRIDE + image


def rank_detections(dt: Detections, category_map: IntArray, max_det: int) -> RankedDetections:
    """Keep detections whose category maps to >= 0 (renumbered by ``category_map``)."""
    category = category_map[dt.category]
    keep = np.flatnonzero(category >= 0)
    order = keep[np.lexsort((-dt.score[keep], dt.image[keep], category[keep]))]
    group = group_key(category[order], dt.image[order])
    first = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.append(first, len(order))))
    cut = rank < max_det
    order = order[cut]
    return RankedDetections(
        category=category[order],
        image=dt.image[order],
        rank=rank[cut],
        score=dt.score[order],
        boxes=dt.boxes[order],
        area=dt.areas()[order],
        source=order,
    )
