"""``instance_segmentation_map``: COCO mask AP (``iouType="segm"``), identical to pycocotools.

``input/gt.json`` is a COCO annotation object (or a list of annotations) whose annotations carry a
``segmentation`` (compressed or uncompressed RLE, or polygons); ``output/pred.json`` a COCO results
list ``[{image_id, category_id, segmentation, score}]``. The 12 stats and per-category AP are
pycocotools' for ``iouType="segm"``: masks are validated and turned into RLEs by
:mod:`services.scorer.builtin.coco.segm`, pairs are compared by ``maskUtils.iou``, and matching,
accumulation and summary are the vectorised evaluator that ``detection_map`` uses.
"""

from __future__ import annotations

import time

from services.scorer.builtin.coco.segm import parse_segm
from services.scorer.builtin.detection import (
    GT_FILE,
    PRED_FILE,
    DetectionParams,
    coco_result,
    read_json,
)
from shared.models import Result
from shared.scoring import register
from shared.workspace import Workspace

DESCRIPTION = (
    "COCO mask mAP@[.5:.95] (RLE or polygon masks) and the other 11 COCO stats plus per-category "
    "AP, identical to pycocotools COCOeval with iouType='segm'."
)
FILES = (GT_FILE, PRED_FILE)


@register("instance_segmentation_map", version="1.0.0", task_type="instance_segmentation",
          description=DESCRIPTION, expected_files=FILES, primary_metric="mAP",
          params=DetectionParams)  # fmt: skip
def instance_segmentation_map(ws: Workspace, params: DetectionParams) -> Result:
    started = time.perf_counter()
    gt_raw = read_json(ws.root / GT_FILE, GT_FILE)
    dt_raw = read_json(ws.root / PRED_FILE, PRED_FILE)
    gt, dt, masks = parse_segm(gt_raw, dt_raw, gt_file=GT_FILE, dt_file=PRED_FILE)
    return coco_result(ws, params, (gt, dt), started, masks)
