"""Benchmark ``instance_segmentation_map``'s evaluation against pycocotools' ``iouType="segm"``.

Run ``python -m bench.bench_instance_segmentation`` (5,000 images of 640 x 480, ~37k ground-truth
masks, ~37k detections) or ``--quick`` (1,000 images). The boxes of ``bench.bench_detection``'s
seeded COCO-like set become masks: ground truths are polygons (the box with one corner cut, as
COCO stores most annotations; crowd ones as uncompressed RLE), detections compressed RLE strings
(their box with the opposite corner cut) without a ``bbox``, so areas are mask areas. Timed on
both sides: loading (``COCO()`` + ``loadRes`` / our parsing, which validates and converts the
masks) and evaluation (``evaluate`` + ``accumulate`` + ``summarize``, which for pycocotools
includes turning polygons into RLEs). Every one of the 12 stats must agree within 1e-9.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from bench.bench_detection import TOLERANCE, make_detections, make_ground_truth, run_reference
from services.scorer.builtin.coco import EvalParams, summarize
from services.scorer.builtin.coco.evaluate import evaluate
from services.scorer.builtin.coco.segm import parse_segm

H, W = 480, 640


def _polygon(box: list[float], corner: int) -> list[float]:
    x, y, w, h = box
    cut = 0.25 * min(w, h)
    points = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    px, py = points[corner]
    dx, dy = (cut if corner in (0, 3) else -cut), (cut if corner in (0, 1) else -cut)
    pts = [*points[:corner], (px + dx, py), (px, py + dy), *points[corner + 1 :]]
    return [v for point in pts for v in point]


def to_masks(gt: dict[str, Any], dts: list[dict[str, Any]]) -> None:
    for ann in gt["annotations"]:
        polygon = [_polygon(ann["bbox"], 0)]
        ann["segmentation"] = _uncompressed_box(ann["bbox"]) if ann["iscrowd"] else polygon
    polygons = [[_polygon(d.pop("bbox"), 2)] for d in dts]
    for det, polygon in zip(dts, polygons, strict=True):
        rle = mask_utils.frPyObjects(polygon, H, W)[0]
        det["segmentation"] = {"size": [H, W], "counts": rle["counts"].decode()}


def _uncompressed_box(box: list[float]) -> dict[str, Any]:
    """A crowd region as COCO stores it: uncompressed RLE (column-major runs, zeros first)."""
    x, y, w, h = (round(v) for v in box)
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y : y + max(h, 1), x : x + max(w, 1)] = 1
    flat = mask.ravel(order="F")
    runs = np.diff(np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [len(flat)])))
    return {"size": [H, W], "counts": ([0] if flat[0] else []) + runs.tolist()}


def run_ours(gt: dict[str, Any], dts: list[dict[str, Any]]) -> tuple[np.ndarray, float, float]:
    t0 = time.perf_counter()
    ground_truth, detections, masks = parse_segm(gt, dts, gt_file="gt.json", dt_file="pred.json")
    t1 = time.perf_counter()
    stats = summarize(evaluate(ground_truth, detections, EvalParams(), masks))
    t2 = time.perf_counter()
    return np.array(list(stats.values())), t1 - t0, t2 - t1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images instead of 5,000")
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args(argv)
    n_images = 1000 if args.quick else 5000
    rng = np.random.default_rng(args.seed)
    gt = make_ground_truth(rng, n_images, per_image=7.36)
    dts = make_detections(rng, gt, int(n_images * 7.4))
    to_masks(gt, dts)
    ref_stats, ref_load, ref_eval = run_reference(gt, dts, "segm")
    our_stats, our_load, our_eval = run_ours(gt, dts)
    diff = float(np.max(np.abs(ref_stats - our_stats)))
    print(f"{n_images} images, {len(gt['annotations'])} gt masks, {len(dts)} detected masks")
    print(
        f"pycocotools  COCO()+loadRes {ref_load:7.2f} s   evaluate+accumulate+summarize "
        f"{ref_eval:7.2f} s"
    )
    print(
        f"ours         parse          {our_load:7.2f} s   evaluate+summarize            "
        f"{our_eval:7.2f} s"
    )
    print(
        f"ratio ours/pycocotools: evaluation {our_eval / ref_eval:.3f}, with loading "
        f"{(our_load + our_eval) / (ref_load + ref_eval):.3f}; AP {our_stats[0]:.6f}, "
        f"max |diff| over 12 stats {diff:.2e}"
    )
    return 0 if diff <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
