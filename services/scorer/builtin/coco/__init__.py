"""A vectorised re-implementation of pycocotools' ``COCOeval`` for bounding boxes.

It reproduces ``evaluate()`` + ``accumulate()`` + ``summarize()`` (``iouType="bbox"``) to the last
bit on the same input, including pycocotools' stable ordering of tied scores, crowd boxes, area
ranges and ``maxDets`` truncation, but works on whole numpy arrays instead of per-image dicts.

Pipeline: :mod:`.ground_truth` and :mod:`.detections` (JSON -> validated arrays) -> :mod:`.ranked`
(pycocotools' detection order) -> :mod:`.pairs` (same image and category pairs with their IoU) ->
:mod:`.match` (the greedy matching, one detection rank at a time across all images) ->
:mod:`.accumulate` (precision/recall curves) -> :mod:`.summarize` (the 12 COCO stats).
:func:`.evaluate.evaluate` runs the middle of it.
"""

from services.scorer.builtin.coco.data import Detections, GroundTruth
from services.scorer.builtin.coco.detections import parse_detections
from services.scorer.builtin.coco.evaluate import CocoEvaluation, evaluate
from services.scorer.builtin.coco.ground_truth import parse_ground_truth
from services.scorer.builtin.coco.params import EvalParams
from services.scorer.builtin.coco.summarize import STAT_NAMES, per_category_ap, summarize

__all__ = [
    "STAT_NAMES",
    "CocoEvaluation",
    "Detections",
    "EvalParams",
    "GroundTruth",
    "evaluate",
    "parse_detections",
    "parse_ground_truth",
    "per_category_ap",
    "summarize",
]
