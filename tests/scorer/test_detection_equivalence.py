"""detection_map's evaluator against pycocotools' COCOeval on many random inputs.

Every case runs both on the same data and compares the 12 stats (within 1e-9, the contract), the
per-category AP, and the full precision/recall arrays (bit for bit, which is what the
implementation actually achieves).
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from services.scorer.builtin.coco import (
    EvalParams,
    evaluate,
    parse_detections,
    parse_ground_truth,
    per_category_ap,
    summarize,
)

Json = dict[str, Any]


# ---------------------------------------------------------------- reference and ours


def reference(
    gt: Json, dts: list[Json], params: EvalParams | None = None, iou_type: str = "bbox"
) -> COCOeval:
    """pycocotools on deep copies (loadRes mutates), stdout silenced, same params as ``params``."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        if dts:
            coco_dt = coco_gt.loadRes(copy.deepcopy(dts))
        else:  # loadRes cannot take an empty list; build the empty result set by hand
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": gt["images"],
                "categories": gt["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if params is not None:
            _apply(ev.params, params)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _apply(p: Any, params: EvalParams) -> None:
    p.iouThrs = np.array(params.iou_thresholds)
    p.maxDets = list(params.max_dets)
    p.areaRng = [[lo, hi] for _, lo, hi in params.area_ranges]
    p.areaRngLbl = list(params.area_labels)
    if params.category_ids is not None:
        p.catIds = list(params.category_ids)


def ours(gt: Any, dts: list[Json], params: EvalParams | None = None) -> tuple[Any, Any]:
    ground_truth = parse_ground_truth(gt, file="gt.json")
    detections = parse_detections(dts, ground_truth, file="pred.json")
    evaluation = evaluate(ground_truth, detections, params or EvalParams())
    return evaluation, summarize(evaluation)


def reference_per_category(ev: COCOeval, keys: list[str]) -> dict[str, float]:
    p = ev.params
    area = [i for i, label in enumerate(p.areaRngLbl) if label == "all"]
    mdet = [i for i, m in enumerate(p.maxDets) if m == 100]
    s = ev.eval["precision"][:, :, :, area, mdet]
    out = {}
    for k, key in enumerate(keys):
        valid = s[:, :, k][s[:, :, k] > -1]
        out[key] = float(np.mean(valid)) if len(valid) else -1.0
    return out


def assert_same(
    gt: Json, dts: list[Json], params: EvalParams | None = None, ours_gt: Any = None
) -> np.ndarray:
    ref = reference(gt, dts, params)
    evaluation, stats = ours(gt if ours_gt is None else ours_gt, dts, params)
    values = np.array(list(stats.values()))
    np.testing.assert_allclose(values, ref.stats, rtol=0, atol=1e-9)
    assert np.array_equal(evaluation.precision, ref.eval["precision"])
    assert np.array_equal(evaluation.recall, ref.eval["recall"])
    mine = per_category_ap(evaluation)
    expected = reference_per_category(ref, list(mine))
    assert mine.keys() == expected.keys()
    np.testing.assert_allclose(list(mine.values()), list(expected.values()), rtol=0, atol=1e-9)
    return values


# ---------------------------------------------------------------- random data


def random_case(seed: int, *, crowded: bool = False) -> tuple[Json, list[Json]]:
    """Small images with mixed box sizes, crowd boxes, tied scores, empty images and categories
    without ground truth; annotation ids sometimes start at 0 (a pycocotools quirk)."""
    rng = np.random.default_rng(seed)
    n_img, n_cat = int(rng.integers(1, 10)), int(rng.integers(1, 3 if crowded else 6))
    img_ids = [int(x) for x in rng.choice(1000, n_img, replace=False)]
    cat_ids = [int(x) for x in rng.choice(50, n_cat, replace=False) + 1]
    gt_cats = cat_ids[: max(1, n_cat - 1)]  # the last category has no ground truth
    anns: list[Json] = []
    next_id = int(rng.integers(0, 2))
    for image in img_ids:
        for _ in range(int(rng.integers(0, 8))):
            scale = float(rng.choice([10.0, 50.0, 160.0]))
            w, h = (float(v) for v in rng.uniform(0, scale, 2).round(int(rng.integers(0, 3))))
            x, y = (float(v) for v in rng.uniform(0, 150, 2).round(1))
            ann = {
                "id": next_id,
                "image_id": image,
                "category_id": int(rng.choice(gt_cats)),
                "bbox": [x, y, w, h],
                "area": w * h * float(rng.choice([1.0, 0.6])),
                "iscrowd": int(rng.random() < 0.15),
            }
            if rng.random() < 0.1:
                ann["ignore"] = 1  # pycocotools overwrites it with iscrowd
            anns.append(ann)
            next_id += 1
    levels = int(rng.choice([2, 5, 1000]))
    low, high = (150, 300) if crowded else (0, 25)
    dts: list[Json] = []
    for image in img_ids:
        own = [a for a in anns if a["image_id"] == image]
        for _ in range(int(rng.integers(low, high))):
            if own and rng.random() < 0.6:
                src = own[int(rng.integers(len(own)))]
                x, y, w, h = src["bbox"]
                jitter = rng.normal(0, 0.1, 4) * max(w, h, 1.0)
                box = [x + jitter[0], y + jitter[1], abs(w + jitter[2]), abs(h + jitter[3])]
                cat = src["category_id"] if rng.random() < 0.9 else int(rng.choice(cat_ids))
            else:
                box = [*rng.uniform(0, 150, 2), *rng.uniform(0, 80, 2)]
                cat = int(rng.choice(cat_ids))
            dts.append(
                {
                    "image_id": image,
                    "category_id": cat,
                    "bbox": [float(v) for v in box],
                    "score": float(rng.integers(0, levels) / levels),
                }
            )
    gt = {
        "images": [{"id": i} for i in img_ids],
        "annotations": anns,
        "categories": [{"id": c, "name": f"cat{c}"} for c in cat_ids],
    }
    return gt, dts


NON_DEFAULT = [
    EvalParams(iou_thresholds=(0.3, 0.5, 0.75, 1.0), max_dets=(1, 3, 5)),
    EvalParams(iou_thresholds=(0.1, 0.65), max_dets=(2, 4, 100)),  # no .5/.75: AP50/AP75 = -1
    EvalParams(max_dets=(1, 10, 300)),  # no 100: AP = -1 as in pycocotools
    EvalParams(area_ranges=(("all", 0.0, 1e10), ("small", 0.0, 400.0), ("huge", 5e3, 1e10))),
    EvalParams(area_ranges=(("medium", 100.0, 2000.0), ("all", 0.0, 1e10), ("large", 2e3, 3e3))),
]


# ---------------------------------------------------------------- tests


def test_random_cases_match_pycocotools() -> None:
    positive = 0
    for seed in range(120):
        gt, dts = random_case(seed)
        positive += int((assert_same(gt, dts) > 0).any())
    assert positive > 90  # the cases are not degenerate


def test_more_detections_than_max_dets_match() -> None:
    for seed in range(8):
        gt, dts = random_case(1000 + seed, crowded=True)
        groups = np.unique(
            [(d["image_id"], d["category_id"]) for d in dts], axis=0, return_counts=True
        )[1]
        assert groups.max() > 100
        assert_same(gt, dts)


@pytest.mark.parametrize("params", NON_DEFAULT, ids=range(len(NON_DEFAULT)))
def test_non_default_params_match(params: EvalParams) -> None:
    for seed in range(25):
        gt, dts = random_case(2000 + seed)
        assert_same(gt, dts, params)


def test_category_filter_matches() -> None:
    for seed in range(25):
        gt, dts = random_case(3000 + seed)
        cats = sorted(c["id"] for c in gt["categories"])[::2]
        assert_same(gt, dts, EvalParams(category_ids=tuple(cats)))


def test_undefined_stats_are_minus_one_like_pycocotools() -> None:
    gt, dts = random_case(7)
    stats = assert_same(gt, dts, EvalParams(iou_thresholds=(0.6, 0.7), max_dets=(1, 10, 20)))
    assert stats[0] == -1  # AP is read at maxDets=100
    assert stats[1] == -1 and stats[2] == -1  # no 0.5 or 0.75 threshold
    assert (stats[6:9] >= 0).all()


def test_simplified_ground_truth_matches_its_coco_equivalent() -> None:
    for seed in range(30):
        gt, dts = random_case(4000 + seed)
        names = {i["id"]: f"img_{i['id']:04d}" for i in gt["images"]}
        anns = [
            a
            for a in gt["annotations"]
            if a["category_id"] in {b["category_id"] for b in gt["annotations"]}
        ]
        simple = [
            {"image_id": names[a["image_id"]], "category_id": a["category_id"], "bbox": a["bbox"]}
            for a in anns
        ]
        used_images = sorted({s["image_id"] for s in simple})
        used_cats = sorted({s["category_id"] for s in simple})
        coco = {
            "images": [{"id": i} for i in used_images],
            "categories": [{"id": c, "name": str(c)} for c in used_cats],
            "annotations": [
                {**s, "id": n + 1, "area": s["bbox"][2] * s["bbox"][3], "iscrowd": 0}
                for n, s in enumerate(simple)
            ],
        }
        preds = [
            {**d, "image_id": names[d["image_id"]]}
            for d in dts
            if names[d["image_id"]] in set(used_images) and d["category_id"] in used_cats
        ]
        assert_same(coco, preds, ours_gt=simple)


def test_empty_predictions_score_zero() -> None:
    gt, _ = random_case(11)
    stats = assert_same(gt, [])
    assert stats[0] in (0.0, -1.0)


def test_match_to_annotation_id_zero_counts_as_false_positive_like_pycocotools() -> None:
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": 0,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 10, 10],
                "area": 100,
                "iscrowd": 0,
            }
        ],
    }
    dts = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]
    assert assert_same(gt, dts)[0] == 0.0
    gt["annotations"][0]["id"] = 1
    assert assert_same(gt, dts)[0] == pytest.approx(1.0)  # pycocotools: 1 / (1 + eps)


def test_iou_exactly_at_threshold_matches() -> None:
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 10, 10],
                "area": 100,
                "iscrowd": 0,
            }
        ],
    }
    dts = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 20], "score": 0.5}]  # IoU 0.5
    assert assert_same(gt, dts)[1] == pytest.approx(1.0)


_coord = st.integers(0, 6).map(float)
_size = st.integers(0, 4).map(float)
_box = st.tuples(_coord, _coord, _size, _size).map(list)


@st.composite
def grid_cases(draw: st.DrawFn) -> tuple[Json, list[Json]]:
    """Boxes on a coarse grid so that equal IoUs, IoU == threshold and score ties are common."""
    n_img = draw(st.integers(1, 3))
    gts = draw(
        st.lists(
            st.tuples(st.integers(1, n_img), st.integers(1, 2), _box, st.booleans()), max_size=8
        )
    )
    dts = draw(
        st.lists(
            st.tuples(st.integers(1, n_img), st.integers(1, 2), _box, st.integers(0, 3)),
            max_size=12,
        )
    )
    gt = {
        "images": [{"id": i} for i in range(1, n_img + 1)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {
                "id": n + 1,
                "image_id": i,
                "category_id": c,
                "bbox": b,
                "area": b[2] * b[3],
                "iscrowd": int(crowd),
            }
            for n, (i, c, b, crowd) in enumerate(gts)
        ],
    }
    preds = [{"image_id": i, "category_id": c, "bbox": b, "score": s / 4} for i, c, b, s in dts]
    return gt, preds


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid_cases())
def test_grid_cases_match_pycocotools(case: tuple[Json, list[Json]]) -> None:
    gt, dts = case
    assert_same(gt, dts, EvalParams(max_dets=(1, 2, 100)))


def test_equal_iou_tie_goes_to_the_later_annotation() -> None:
    """The first detection overlaps both boxes equally; pycocotools takes the later one, which
    decides whether the second detection (that fits only one of them well) can still match."""
    boxes = [[0, 0, 10, 10], [2, 0, 10, 10]]
    dts = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [3, 0, 10, 10], "score": 0.8},
    ]
    recall = []
    for order in ((0, 1), (1, 0)):
        anns = [
            {
                "id": n + 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": boxes[i],
                "area": 100,
                "iscrowd": 0,
            }
            for n, i in enumerate(order)
        ]
        gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}], "annotations": anns}
        recall.append(assert_same(gt, dts)[8])
    assert recall[0] < recall[1]  # file order decided the tie
