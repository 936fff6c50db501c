"""Evaluation parameters, with pycocotools' defaults reproduced to the bit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.scorer.builtin.coco.data import CategoryId, FloatArray


def coco_iou_thresholds() -> list[float]:
    """``Params.iouThrs`` exactly as pycocotools computes it (0.5:0.05:0.95)."""
    values = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
    return [float(v) for v in values]


def coco_recall_thresholds() -> FloatArray:
    """``Params.recThrs``: 101 recall points 0:0.01:1."""
    return np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


def coco_area_ranges() -> dict[str, tuple[float, float]]:
    return {
        "all": (0.0, 1e5**2),
        "small": (0.0, 32.0**2),
        "medium": (32.0**2, 96.0**2),
        "large": (96.0**2, 1e5**2),
    }


@dataclass(frozen=True, slots=True)
class EvalParams:
    """What ``COCOeval.params`` holds for a bbox evaluation (``useCats=1``)."""

    iou_thresholds: tuple[float, ...] = field(default_factory=lambda: tuple(coco_iou_thresholds()))
    max_dets: tuple[int, ...] = (1, 10, 100)
    area_ranges: tuple[tuple[str, float, float], ...] = field(
        default_factory=lambda: tuple((k, lo, hi) for k, (lo, hi) in coco_area_ranges().items())
    )
    category_ids: tuple[CategoryId, ...] | None = None  # None: every ground-truth category

    @property
    def area_labels(self) -> tuple[str, ...]:
        return tuple(label for label, _, _ in self.area_ranges)

    def area_bounds(self) -> FloatArray:
        """(A, 2) lower and upper area bounds, both inclusive."""
        bounds = [[lo, hi] for _, lo, hi in self.area_ranges]
        return np.array(bounds, dtype=np.float64).reshape(-1, 2)
