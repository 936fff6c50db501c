"""Benchmark ``detection_map``'s evaluation against pycocotools on a COCO val2017-sized set.

Run ``python -m bench.bench_detection`` (full: 5,000 images, ~36.8k gt, ~37k and ~370k
detections) or ``--quick`` (1,000 images). The data is synthetic and seeded: 80 categories with a
long-tailed frequency, COCO's area mix (about 41% small, 34% medium, 25% large), ~1% crowd boxes;
detections are jittered ground truths plus false positives, scores rounded to 2 decimals so many
tie. Both evaluators run on the same data in this process; every one of the 12 stats must agree
within 1e-9 or the run fails.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from services.scorer.builtin.coco import (
    EvalParams,
    evaluate,
    parse_detections,
    parse_ground_truth,
    summarize,
)

TOLERANCE = 1e-9
_AREA_SIDES = ((4.0, 32.0), (32.0, 96.0), (96.0, 400.0))  # sqrt(area) ranges: small, medium, large


def make_ground_truth(rng: np.random.Generator, n_images: int, per_image: float) -> dict[str, Any]:
    counts = rng.poisson(per_image, n_images)
    n = int(counts.sum())
    image = np.repeat(np.arange(1, n_images + 1), counts)
    weights = 1.0 / np.arange(1, 81) ** 1.1
    category = rng.choice(80, n, p=weights / weights.sum()) + 1
    bucket = rng.choice(3, n, p=[0.41, 0.34, 0.25])
    lo, hi = np.array(_AREA_SIDES)[bucket].T
    side = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    aspect = np.exp(rng.normal(0.0, 0.4, n))
    w, h = np.minimum(side * aspect, 640.0), np.minimum(side / aspect, 480.0)
    x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
    crowd = rng.random(n) < 0.01
    boxes = np.round(np.stack([x, y, w, h], axis=1), 2)
    annotations = [
        {
            "id": i + 1,
            "image_id": int(im),
            "category_id": int(c),
            "bbox": b,
            "iscrowd": int(cr),
            "area": float(b[2] * b[3] * 0.8),
        }
        for i, (im, c, b, cr) in enumerate(zip(image, category, boxes.tolist(), crowd, strict=True))
    ]
    return {
        "images": [{"id": i, "width": 640, "height": 480} for i in range(1, n_images + 1)],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class_{c}"} for c in range(1, 81)],
    }


def make_detections(
    rng: np.random.Generator, gt: dict[str, Any], n_dets: int
) -> list[dict[str, Any]]:
    anns = gt["annotations"]
    n_true = min(int(n_dets * 0.8), int(1.5 * len(anns)))
    source = rng.integers(0, len(anns), n_true)
    gt_boxes = np.array([anns[i]["bbox"] for i in source]).reshape(-1, 4)
    jitter = rng.normal(0.0, 0.06, (n_true, 4)) * gt_boxes[:, [2, 3, 2, 3]]
    true_boxes = gt_boxes + jitter
    true_boxes[:, 2:] = np.abs(true_boxes[:, 2:])
    true_image = np.array([anns[i]["image_id"] for i in source])
    true_cat = np.array([anns[i]["category_id"] for i in source])
    n_false = n_dets - n_true
    side = np.exp(rng.uniform(np.log(4.0), np.log(300.0), n_false))
    false_boxes = np.stack(
        [
            rng.uniform(0, 600, n_false),
            rng.uniform(0, 440, n_false),
            side,
            side * rng.uniform(0.5, 2, n_false),
        ],
        axis=1,
    )
    image = np.concatenate([true_image, rng.integers(1, len(gt["images"]) + 1, n_false)])
    category = np.concatenate([true_cat, rng.integers(1, 81, n_false)])
    score = np.round(np.concatenate([rng.beta(4, 2, n_true), rng.beta(1.5, 4, n_false)]), 2)
    boxes = np.round(np.vstack([true_boxes, false_boxes]), 2)
    order = rng.permutation(n_dets)
    return [
        {
            "image_id": int(image[i]),
            "category_id": int(category[i]),
            "bbox": boxes[i].tolist(),
            "score": float(score[i]),
        }
        for i in order
    ]


def run_reference(
    gt: dict[str, Any], dts: list[dict[str, Any]], iou_type: str = "bbox"
) -> tuple[np.ndarray, float, float]:
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dts))
        t1 = time.perf_counter()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        t2 = time.perf_counter()
    return np.asarray(ev.stats), t1 - t0, t2 - t1


def run_ours(gt: dict[str, Any], dts: list[dict[str, Any]]) -> tuple[np.ndarray, float, float]:
    t0 = time.perf_counter()
    ground_truth = parse_ground_truth(gt, file="gt.json")
    detections = parse_detections(dts, ground_truth, file="pred.json")
    t1 = time.perf_counter()
    stats = summarize(evaluate(ground_truth, detections, EvalParams()))
    t2 = time.perf_counter()
    return np.array(list(stats.values())), t1 - t0, t2 - t1


def bench(gt: dict[str, Any], dts: list[dict[str, Any]], label: str) -> bool:
    ref_stats, ref_load, ref_eval = run_reference(gt, dts)
    our_stats, our_parse, our_eval = run_ours(gt, dts)
    diff = float(np.max(np.abs(ref_stats - our_stats)))
    ok = diff <= TOLERANCE
    print(
        f"\n== {label}: {len(gt['images'])} images, {len(gt['annotations'])} gt, "
        f"{len(dts)} detections"
    )
    print(
        f"pycocotools  COCO()+loadRes {ref_load:7.2f} s   "
        f"evaluate+accumulate+summarize {ref_eval:7.2f} s"
    )
    print(
        f"ours         parse          {our_parse:7.2f} s   "
        f"evaluate+summarize            {our_eval:7.2f} s"
    )
    print(
        f"ratio ours/pycocotools: evaluation {our_eval / ref_eval:.3f}, "
        f"with loading {(our_parse + our_eval) / (ref_load + ref_eval):.3f}"
    )
    print(
        f"AP {our_stats[0]:.6f}  AP50 {our_stats[1]:.6f}  max |diff| over 12 stats {diff:.2e}  "
        f"{'OK' if ok else 'MISMATCH'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images instead of 5,000")
    parser.add_argument("--images", type=int, default=None, help="number of images")
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument(
        "--dets",
        type=int,
        nargs="*",
        default=None,
        help="detections per run (default: 7.4 and 74 per image)",
    )
    args = parser.parse_args(argv)
    n_images = args.images or (1000 if args.quick else 5000)
    rng = np.random.default_rng(args.seed)
    gt = make_ground_truth(rng, n_images, per_image=7.36)
    sizes = args.dets or [int(n_images * 7.4), int(n_images * 74)]
    results = [bench(gt, make_detections(rng, gt, n), f"{n} detections") for n in sizes]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
