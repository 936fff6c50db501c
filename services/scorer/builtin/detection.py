"""``detection_map``: COCO bbox mAP, identical to pycocotools' ``COCOeval`` and much faster.

``input/gt.json`` is a COCO annotation object or the README's simplified list of boxes;
``output/pred.json`` a COCO results list. The 12 stats (``AP`` ... ``ARl``) are pycocotools'
``stats`` array for ``iouType="bbox"`` on the same params, computed by the vectorised evaluator in
:mod:`services.scorer.builtin.coco`; ``AP_per_category`` is keyed by category name (or id as a
string when names are missing or repeat). See ``docs/SCORERS.md`` for every decision.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from services.scorer.builtin.coco import (
    Detections,
    EvalParams,
    GroundTruth,
    evaluate,
    parse_detections,
    parse_ground_truth,
    per_category_ap,
    summarize,
)
from services.scorer.builtin.coco.masks import MaskSet
from services.scorer.builtin.coco.params import coco_area_ranges, coco_iou_thresholds
from services.scorer.builtin.plots import PlotParams
from services.scorer.builtin.plots.detection import plot_detection
from shared.errors import ErrorCode, data_error, validation_error
from shared.models import MetricValue, Result
from shared.scoring import register
from shared.workspace import Workspace

GT_FILE = "input/gt.json"
PRED_FILE = "output/pred.json"


class DetectionParams(PlotParams):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    iou_thresholds: list[float] = Field(
        default_factory=coco_iou_thresholds,
        min_length=1,
        description="IoU thresholds in (0, 1], increasing; default COCO's 0.50:0.05:0.95",
    )
    max_dets: list[int] = Field(
        default_factory=lambda: [1, 10, 100],
        min_length=3,
        max_length=3,
        description="three increasing detection caps per image: AR@[0], AR@[1], the rest @[2]",
    )
    category_ids: list[int | str] | None = Field(
        None, description="evaluate only these ground-truth category ids (default: all)"
    )
    area_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=coco_area_ranges,
        min_length=1,
        description="label -> [min, max] box area, inclusive; APs/APm/APl read small/medium/large",
    )

    @field_validator("iou_thresholds")
    @classmethod
    def _thresholds(cls, value: list[float]) -> list[float]:
        if any(not 0 < t <= 1 for t in value):
            raise ValueError("IoU thresholds must be in (0, 1]")
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("IoU thresholds must be strictly increasing")
        return value

    @field_validator("max_dets")
    @classmethod
    def _max_dets(cls, value: list[int]) -> list[int]:
        if value[0] < 1 or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("max_dets must be positive and strictly increasing")
        return value

    @field_validator("area_ranges")
    @classmethod
    def _areas(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        if any(lo > hi for lo, hi in value.values()):
            raise ValueError("each area range needs min <= max")
        return value

    def to_eval_params(self) -> EvalParams:
        return EvalParams(
            iou_thresholds=tuple(self.iou_thresholds),
            max_dets=tuple(self.max_dets),
            area_ranges=tuple((k, lo, hi) for k, (lo, hi) in self.area_ranges.items()),
            category_ids=None if self.category_ids is None else tuple(self.category_ids),
        )


def read_json(path: Path, relative: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise data_error(
            ErrorCode.PARSE_ERROR, f"{relative} is not valid JSON: {exc}", file=relative
        ) from exc


def _check_categories(params: DetectionParams, known: tuple[int | str, ...]) -> None:
    known_ids = set(known)
    unknown = [c for c in params.category_ids or () if c not in known_ids]
    if unknown:
        raise validation_error(
            ErrorCode.BAD_PARAMS,
            f"category_ids {unknown[:5]} are not ground-truth categories",
            unknown=unknown[:5],
        )


@register(
    "detection_map",
    version="1.0.0",
    task_type="detection",
    description="COCO bbox mAP@[.5:.95] and the other 11 COCO stats plus per-category AP, "
    "identical to pycocotools COCOeval (evaluate/accumulate/summarize) on the same params.",
    expected_files=(GT_FILE, PRED_FILE),
    primary_metric="mAP",
    params=DetectionParams,
)
def detection_map(ws: Workspace, params: DetectionParams) -> Result:
    started = time.perf_counter()
    gt = parse_ground_truth(read_json(ws.root / GT_FILE, GT_FILE), file=GT_FILE)
    dt = parse_detections(read_json(ws.root / PRED_FILE, PRED_FILE), gt, file=PRED_FILE)
    return coco_result(ws, params, (gt, dt), started)


def coco_result(
    ws: Workspace,
    params: DetectionParams,
    data: tuple[GroundTruth, Detections],
    started: float,
    masks: MaskSet | None = None,
) -> Result:
    """Evaluate parsed ground truth and detections (by mask IoU given ``masks``) into the
    detection scorers' Result; ``started`` is when reading began."""
    gt, dt = data
    _check_categories(params, gt.category_ids)
    read_s = time.perf_counter() - started
    evaluation = evaluate(gt, dt, params.to_eval_params(), masks)
    stats = summarize(evaluation)
    metrics: dict[str, MetricValue] = {"mAP": stats["AP"], **stats}
    metrics["AP_per_category"] = per_category_ap(evaluation)
    metrics["n_images"] = float(len(gt.image_ids))
    metrics["n_gt"] = float(len(gt))
    metrics["n_detections"] = float(len(dt))
    metrics_done = time.perf_counter()
    artifacts = plot_detection(ws, evaluation) if params.plots else {}
    return Result(
        summary={"mAP": stats["AP"], "score": stats["AP"], "AP50": stats["AP50"]},
        metrics=metrics,
        artifacts=artifacts,
        timing={
            "read_s": read_s,
            "metrics_s": metrics_done - started - read_s,
            "artifacts_s": time.perf_counter() - metrics_done,
        },
    )
