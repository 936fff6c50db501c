"""pycocotools' ``COCOeval.summarize`` for bbox: the 12 stats, with its fixed choices kept.

pycocotools hard-codes some settings, and so do we, to stay comparable with published numbers:
``AP`` is read at ``maxDets == 100`` (``-1`` if 100 is not one of the max_dets), ``AP50``/``AP75``
at IoU exactly 0.5/0.75 (``-1`` if not a threshold), the ``s``/``m``/``l`` stats at the area labels
``small``/``medium``/``large`` (``-1`` if absent); ``AP50`` to ``APl`` and ``AR100`` to ``ARl`` use
``max_dets[2]``, ``AR1`` and ``AR10`` use ``max_dets[0]`` and ``max_dets[1]``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from services.scorer.builtin.coco.data import FloatArray
from services.scorer.builtin.coco.evaluate import CocoEvaluation

STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


class _Stat(NamedTuple):
    precision: bool
    iou: float | None
    area: str
    max_det: int


def _specs(max_dets: tuple[int, ...]) -> tuple[_Stat, ...]:
    last = max_dets[2]
    return (
        _Stat(True, None, "all", 100),
        _Stat(True, 0.5, "all", last),
        _Stat(True, 0.75, "all", last),
        _Stat(True, None, "small", last),
        _Stat(True, None, "medium", last),
        _Stat(True, None, "large", last),
        _Stat(False, None, "all", max_dets[0]),
        _Stat(False, None, "all", max_dets[1]),
        _Stat(False, None, "all", last),
        _Stat(False, None, "small", last),
        _Stat(False, None, "medium", last),
        _Stat(False, None, "large", last),
    )


def summarize(ev: CocoEvaluation) -> dict[str, float]:
    """The 12 COCO detection stats by name (pycocotools' ``stats`` array, in order)."""
    specs = _specs(ev.params.max_dets)
    return {name: _value(ev, spec) for name, spec in zip(STAT_NAMES, specs, strict=True)}


def per_category_ap(ev: CocoEvaluation) -> dict[str, float]:
    """AP of each evaluated category, read like ``AP`` (area ``all``, maxDets 100).

    -1 for a category without ground truth (or when ``AP`` itself is -1 for lack of those settings).
    """
    area = [i for i, label in enumerate(ev.params.area_labels) if label == "all"]
    mdet = [i for i, m in enumerate(ev.params.max_dets) if m == 100]
    values = ev.precision[:, :, :, area, mdet]  # (T, R, K, n)
    return {key: _mean_valid(values[:, :, k]) for k, key in enumerate(ev.category_keys)}


def _value(ev: CocoEvaluation, spec: _Stat) -> float:
    area = [i for i, label in enumerate(ev.params.area_labels) if label == spec.area]
    mdet = [i for i, m in enumerate(ev.params.max_dets) if m == spec.max_det]
    s = ev.precision if spec.precision else ev.recall
    if spec.iou is not None:
        s = s[np.where(spec.iou == np.asarray(ev.params.iou_thresholds))[0]]
    s = s[:, :, :, area, mdet] if spec.precision else s[:, :, area, mdet]
    return _mean_valid(s)


def _mean_valid(s: FloatArray) -> float:
    valid = s[s > -1]
    return float(np.mean(valid)) if len(valid) else -1.0
