"""instance_segmentation_map against pycocotools' COCOeval(iouType="segm") on seeded random and
hypothesis-generated masks in every form (compressed and uncompressed RLE, polygons, crowd
regions, box-carrying results), and the RLE validation: bad masks are standard errors naming the
file and record."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils

from services.scorer.builtin.coco import EvalParams, per_category_ap, summarize
from services.scorer.builtin.coco.evaluate import evaluate
from services.scorer.builtin.coco.masks import compressed_areas
from services.scorer.builtin.coco.segm import parse_segm
from services.scorer.builtin.instance_segmentation import instance_segmentation_map
from services.scorer.registry import ScorerRegistry
from shared.errors import AutoscorerError, ErrorCode, Fault
from shared.workspace import Workspace
from tests.scorer.test_detection_equivalence import reference, reference_per_category

Json = dict[str, Any]


def encode(mask: np.ndarray) -> Json:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def uncompressed(mask: np.ndarray) -> Json:
    flat = mask.astype(np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [len(flat)]))
    runs = np.diff(bounds).tolist()
    if len(flat) and flat[0] == 1:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


def decode(rle: Json) -> np.ndarray:
    """``maskUtils.decode``, whose numpy-2 DeprecationWarning (pycocotools 2.0.x) is not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(mask_utils.decode(rle))


def assert_same(gt: Json, dts: list[Json], params: EvalParams | None = None) -> None:
    ref = reference(gt, dts, params, iou_type="segm")
    ground_truth, detections, masks = parse_segm(gt, dts, gt_file="gt.json", dt_file="pred.json")
    evaluation = evaluate(ground_truth, detections, params or EvalParams(), masks)
    stats = summarize(evaluation)
    np.testing.assert_allclose(list(stats.values()), ref.stats, rtol=0, atol=1e-9)
    assert np.array_equal(evaluation.precision, ref.eval["precision"])
    assert np.array_equal(evaluation.recall, ref.eval["recall"])
    mine = per_category_ap(evaluation)
    expected = reference_per_category(ref, list(mine))
    np.testing.assert_allclose(list(mine.values()), list(expected.values()), rtol=0, atol=1e-9)


def blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
    y1, x1 = int(rng.integers(y0 + 2, h)), int(rng.integers(x0 + 2, w))
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    mask[rng.random((h, w)) < 0.05] ^= 1
    return mask


def random_case(seed: int, *, boxes: bool = False, n_images: int = 6) -> tuple[Json, list[Json]]:
    """Ground truth in all three forms, a crowd region per image, detections that are noisy
    copies of the ground truth plus false positives, with tied scores."""
    rng = np.random.default_rng(seed)
    images, annotations, dts = [], [], []
    for image_id in range(1, n_images + 1):
        h, w = int(rng.integers(20, 70)), int(rng.integers(20, 70))
        images.append({"id": image_id, "height": h, "width": w})
        for k in range(int(rng.integers(0, 6))):
            category = int(rng.integers(1, 4))
            mask = blob(rng, h, w)
            form = k % 3
            if form == 0:
                segm: Any = encode(mask)
            elif form == 1:
                x0, y0 = float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2))
                x1, y1 = float(rng.uniform(x0 + 2, w)), float(rng.uniform(y0 + 2, h))
                segm = [[x0, y0, x1, y0, x1, y1, x0, y1], [x0, y0, x0 + 1.5, y0, x0, y0 + 1.5]]
                mask = decode(mask_utils.merge(mask_utils.frPyObjects(segm, h, w)))
            else:
                segm = uncompressed(mask)
            crowd = int(rng.random() < 0.15)
            area = float(mask.sum()) if rng.random() < 0.8 else float(rng.uniform(0, h * w))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": segm,
                    "area": area,
                    "iscrowd": crowd,
                    "bbox": [0, 0, 1, 1],
                }
            )
            for _ in range(int(rng.integers(0, 3))):
                noisy = mask.copy()
                noisy[rng.random((h, w)) < rng.uniform(0, 0.3)] ^= 1
                dts.append(_det(image_id, category, noisy, rng, boxes))
        for _ in range(int(rng.integers(0, 4))):
            dts.append(_det(image_id, int(rng.integers(1, 4)), blob(rng, h, w), rng, boxes))
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]
    return {"images": images, "annotations": annotations, "categories": categories}, dts


def _det(
    image_id: int, category: int, mask: np.ndarray, rng: np.random.Generator, boxes: bool
) -> Json:
    det: Json = {
        "image_id": image_id,
        "category_id": category,
        "segmentation": encode(mask),
        "score": float(rng.choice([0.9, 0.5, float(rng.random())])),
    }
    if boxes:
        det["bbox"] = [float(v) for v in rng.uniform(0, 40, 4)]
    return det


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_match_pycocotools(seed: int) -> None:
    assert_same(*random_case(seed))


@pytest.mark.parametrize("seed", range(3))
def test_box_carrying_results_use_the_box_area_like_pycocotools(seed: int) -> None:
    gt, dts = random_case(100 + seed, boxes=True)
    assert_same(gt, dts)


def test_non_default_params_match() -> None:
    gt, dts = random_case(7)
    params = EvalParams(
        iou_thresholds=(0.3, 0.5, 0.75),
        max_dets=(1, 2, 100),
        area_ranges=(
            ("all", 0, 1e10),
            ("small", 0, 200.0),
            ("medium", 200.0, 900.0),
            ("large", 900.0, 1e10),
        ),
        category_ids=(1, 3),
    )
    assert_same(gt, dts, params)


def test_empty_predictions() -> None:
    gt, _ = random_case(3)
    assert_same(gt, [])


@st.composite
def tiny_cases(draw: st.DrawFn) -> tuple[Json, list[Json]]:
    """3 x 4 images with a few masks each: many exact IoU ties and duplicates."""
    masks = hnp.arrays(np.uint8, (3, 4), elements=st.integers(0, 1))
    annotations: list[Json] = []
    dts: list[Json] = []
    for image_id in (1, 2):
        for _ in range(draw(st.integers(0, 3))):
            mask = draw(masks)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": draw(st.sampled_from([1, 2])),
                    "segmentation": encode(mask),
                    "area": float(mask.sum()),
                    "iscrowd": draw(st.sampled_from([0, 0, 0, 1])),
                }
            )
        for _ in range(draw(st.integers(0, 4))):
            dts.append(
                {
                    "image_id": image_id,
                    "category_id": draw(st.sampled_from([1, 2])),
                    "segmentation": encode(draw(masks)),
                    "score": draw(st.sampled_from([0.1, 0.5, 0.9])),
                }
            )
    gt = {
        "images": [{"id": 1, "height": 3, "width": 4}, {"id": 2, "height": 3, "width": 4}],
        "annotations": annotations,
        "categories": [{"id": 1}, {"id": 2}],
    }
    return gt, dts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiny_cases())
def test_tiny_cases_match_pycocotools(case: tuple[Json, list[Json]]) -> None:
    gt, dts = case
    if dts:
        assert_same(gt, dts)


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.uint8,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12),
        elements=st.integers(0, 1),
    )
)
def test_rle_strings_decode_to_pycocotools_area(mask: np.ndarray) -> None:
    rle = mask_utils.encode(np.asfortranarray(mask))
    areas, bad = compressed_areas([rle])
    assert len(bad) == 0
    assert areas[0] == mask_utils.area(rle) == mask.sum()


# ---------------------------------------------------------------- the scorer and its errors


def write(root: Path, gt: Any, dts: Any) -> Workspace:
    (root / "input").mkdir(parents=True, exist_ok=True)
    (root / "output").mkdir(parents=True, exist_ok=True)
    (root / "input" / "gt.json").write_text(json.dumps(gt))
    (root / "output" / "pred.json").write_text(json.dumps(dts))
    return Workspace.at(root)


def test_scorer_result(tmp_path: Path) -> None:
    gt, dts = random_case(11)
    result = instance_segmentation_map.score(write(tmp_path, gt, dts), {})
    ref = reference(gt, dts, iou_type="segm")
    assert abs(result.summary["mAP"] - ref.stats[0]) <= 1e-9
    assert result.summary["score"] == result.metrics["mAP"]
    assert set(result.metrics["AP_per_category"]) == {"c1", "c2", "c3"}  # type: ignore[arg-type]


def error_of(root: Path, gt: Any, dts: Any) -> AutoscorerError:
    with pytest.raises(AutoscorerError) as info:
        instance_segmentation_map.score(write(root, gt, dts), {})
    return info.value


M = np.zeros((4, 5), dtype=np.uint8)
M[1:3, 1:4] = 1
GT = {
    "images": [{"id": 1, "height": 4, "width": 5}],
    "categories": [{"id": 1}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": encode(M), "area": 6.0}
    ],
}
OK = {"image_id": 1, "category_id": 1, "segmentation": encode(M), "score": 0.5}


def _gt_with(segmentation: Any) -> Json:
    return {**GT, "annotations": [{**GT["annotations"][0], "segmentation": segmentation}]}


@pytest.mark.parametrize(
    ("gt", "dts", "code", "file", "index"),
    [
        (
            GT,
            [{**OK, "segmentation": {"size": [4, 5], "counts": "0~"}}],
            ErrorCode.BAD_FORMAT,
            "output/pred.json",
            0,
        ),
        (
            GT,
            [OK, {**OK, "segmentation": {"size": [4, 5], "counts": encode(M)["counts"] + "1"}}],
            ErrorCode.BAD_FORMAT,
            "output/pred.json",
            1,
        ),
        (
            GT,
            [{**OK, "segmentation": {"size": [4, 6], "counts": "0"}}],
            ErrorCode.BAD_FORMAT,
            "output/pred.json",
            0,
        ),
        (
            GT,
            [{**OK, "segmentation": {"size": [4, 5], "counts": [3, -1, 18]}}],
            ErrorCode.BAD_FORMAT,
            "output/pred.json",
            0,
        ),
        (
            GT,
            [{**OK, "segmentation": {"size": [4, 5], "counts": [3, 4]}}],
            ErrorCode.BAD_FORMAT,
            "output/pred.json",
            0,
        ),
        (GT, [{**OK, "segmentation": [[0, 0, 1, 1]]}], ErrorCode.BAD_FORMAT, "output/pred.json", 0),
        (
            GT,
            [{**OK, "segmentation": [[0, 0, 1, "a", 2, 2]]}],
            ErrorCode.BAD_FORMAT,
            "output/pred.json",
            0,
        ),
        (
            GT,
            [{k: v for k, v in OK.items() if k != "segmentation"}],
            ErrorCode.BAD_FORMAT,
            "output/pred.json",
            0,
        ),
        (GT, [{**OK, "score": float("nan")}], ErrorCode.BAD_FORMAT, "output/pred.json", 0),
        (GT, [{**OK, "image_id": 9}], ErrorCode.MISMATCH, "output/pred.json", None),
        (GT, [{**OK, "category_id": 9}], ErrorCode.BAD_FORMAT, "output/pred.json", 0),
        (GT, {"not": "a list"}, ErrorCode.BAD_FORMAT, "output/pred.json", None),
        (
            _gt_with({"size": [4, 5], "counts": "zz"}),
            [OK],
            ErrorCode.BAD_FORMAT,
            "input/gt.json",
            0,
        ),
        (_gt_with("polygon?"), [OK], ErrorCode.BAD_FORMAT, "input/gt.json", 0),
        (
            [{"image_id": 1, "category_id": 1, "segmentation": [[0, 0, 2, 0, 2, 2]]}],
            [OK],
            ErrorCode.BAD_FORMAT,
            "input/gt.json",
            0,
        ),
    ],
)
def test_bad_inputs_are_standard_errors(
    tmp_path: Path, gt: Any, dts: Any, code: ErrorCode, file: str, index: int | None
) -> None:
    error = error_of(tmp_path, gt, dts)
    assert (error.code, error.details["file"]) == (code, file)
    assert error.fault == (Fault.ORGANISER if file.startswith("input/") else Fault.PARTICIPANT)
    if index is not None:
        assert error.details["indices"][0] == index


def test_masks_of_another_size_on_an_image_without_declared_size(tmp_path: Path) -> None:
    """Without the image's height and width, its first mask's size is the image's: a mask of
    another size could never match (pycocotools' IoU is -1), so it is refused, gt or pred."""
    other = encode(np.zeros((5, 4), dtype=np.uint8))
    gt = [{"image_id": 1, "category_id": 1, "segmentation": encode(M)}]
    error = error_of(tmp_path / "a", gt, [{**OK, "segmentation": other}])
    assert (error.code, error.details["file"]) == (ErrorCode.BAD_FORMAT, "output/pred.json")
    gt.append({"image_id": 1, "category_id": 1, "segmentation": other})
    error = error_of(tmp_path / "b", gt, [OK])
    assert (error.code, error.details["file"]) == (ErrorCode.BAD_FORMAT, "input/gt.json")
    assert error.details["indices"] == [1]


def test_simplified_list_ground_truth_with_rles(tmp_path: Path) -> None:
    """Compressed RLEs carry their size, so a plain list of annotations works (polygons don't)."""
    gt = [{"image_id": 1, "category_id": 1, "segmentation": encode(M)}]
    result = instance_segmentation_map.score(write(tmp_path, gt, [OK]), {})
    assert result.summary["mAP"] == pytest.approx(1.0, abs=1e-12)


def test_example_workspace_runs_and_scores(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    shutil.copytree(
        Path(__file__).resolve().parents[2] / "examples" / "instance_segmentation", root
    )
    subprocess.run([sys.executable, "submission/predict.py"], cwd=root, check=True, timeout=60)
    params = json.loads((root / "meta.json").read_text())["params"]
    result = instance_segmentation_map.score(Workspace.at(root), params)
    assert 0.3 < result.summary["score"] < 1.0


def test_the_new_scorers_are_registered_and_listed() -> None:
    """``autoscorer scorers list`` lists what the registry built from BUILTIN_MODULES holds."""
    registry = ScorerRegistry.with_builtins()
    for name, task in (
        ("ranking_map", "ranking"),
        ("semantic_segmentation", "segmentation"),
        ("instance_segmentation_map", "instance_segmentation"),
    ):
        info = registry.get(name).info
        assert (info.task_type, info.higher_is_better) == (task, True)
        assert info.params_schema["additionalProperties"] is False
