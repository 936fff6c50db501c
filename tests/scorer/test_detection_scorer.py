"""detection_map as a scorer: metadata, the Result it writes, the README's simplified format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.scorer.builtin.coco import STAT_NAMES
from services.scorer.builtin.detection import DetectionParams, detection_map
from shared.models import Result
from shared.scoring import ScorerDef
from shared.workspace import Workspace


def workspace(tmp_path: Path, gt: Any, pred: list[dict[str, Any]]) -> Workspace:
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    (tmp_path / "input" / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "output" / "pred.json").write_text(json.dumps(pred))
    return Workspace.at(tmp_path)


def test_is_a_registered_scorer_def() -> None:
    assert isinstance(detection_map, ScorerDef)
    info = detection_map.info
    assert info.name == "detection_map"
    assert info.task_type == "detection"
    assert info.expected_files == ("input/gt.json", "output/pred.json")
    assert info.primary_metric == "mAP"
    assert info.higher_is_better
    assert set(info.params_schema["properties"]) == {
        "iou_thresholds",
        "max_dets",
        "category_ids",
        "area_ranges",
        "plots",
    }
    assert detection_map.params_model is DetectionParams


def test_default_params_are_pycocotools_values() -> None:
    params = DetectionParams()
    expected = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert params.iou_thresholds == pytest.approx(expected, abs=1e-15)
    assert params.iou_thresholds[0] == 0.5 and params.iou_thresholds[5] == 0.75  # exact
    assert params.max_dets == [1, 10, 100]
    assert params.area_ranges["medium"] == (1024.0, 9216.0)


README_GT = [
    {"image_id": "img_001", "bbox": [10, 10, 50, 60], "category_id": 1, "score": 0.85},
    {"image_id": "img_001", "bbox": [100, 100, 20, 20], "category_id": 2},
    {"image_id": "img_002", "bbox": [0, 0, 200, 150], "category_id": 1},
]


def test_simplified_ground_truth_end_to_end(tmp_path: Path) -> None:
    pred = [
        {"image_id": "img_001", "bbox": [10, 10, 50, 60], "category_id": 1, "score": 0.9},
        {"image_id": "img_001", "bbox": [300, 300, 20, 20], "category_id": 2, "score": 0.8},
        {"image_id": "img_002", "bbox": [2, 0, 200, 150], "category_id": 1, "score": 0.7},
    ]
    result = detection_map.score(workspace(tmp_path, README_GT, pred), {})
    assert isinstance(result, Result)
    assert result.ok
    assert set(STAT_NAMES) <= set(result.metrics)
    assert result.summary["mAP"] == result.metrics["mAP"] == result.metrics["AP"]
    per_category = result.metrics["AP_per_category"]
    assert isinstance(per_category, dict)
    assert set(per_category) == {"1", "2"}  # no names in the simplified format: ids as strings
    assert per_category["2"] == 0.0  # its only detection misses
    assert per_category["1"] > 0.9
    assert result.metrics["n_images"] == 2.0
    assert result.metrics["n_gt"] == 3.0
    assert result.metrics["n_detections"] == 3.0
    assert result.versioning["scorer"] == "detection_map"
    assert set(result.timing) == {"read_s", "metrics_s", "artifacts_s"}
    json.loads(result.model_dump_json())  # serialisable as result.json


def test_per_category_keys_are_names_when_unique(tmp_path: Path) -> None:
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "x"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "bbox": [0, 0, 9, 9],
                "area": 81,
                "iscrowd": 0,
            }
        ],
    }
    result = detection_map.score(workspace(tmp_path, gt, []), {})
    assert result.metrics["AP_per_category"] == {"dog": -1.0, "x": -1.0, "cat": 0.0}


def test_per_category_keys_fall_back_to_ids_when_names_repeat(tmp_path: Path) -> None:
    gt = {
        "images": [{"id": 1}],
        "annotations": [],
        "categories": [{"id": 1, "name": "same"}, {"id": 2, "name": "same"}],
    }
    result = detection_map.score(workspace(tmp_path, gt, []), {})
    assert result.metrics["AP_per_category"] == {"1": -1.0, "2": -1.0}
    assert result.summary["mAP"] == -1.0  # no ground truth at all: undefined, as pycocotools


def test_category_filter_limits_per_category(tmp_path: Path) -> None:
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 9, 9],
                "area": 81,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 2,
                "bbox": [0, 0, 9, 9],
                "area": 81,
                "iscrowd": 0,
            },
        ],
    }
    pred = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9], "score": 1.0}]
    everything = detection_map.score(workspace(tmp_path, gt, pred), {})
    only_a = detection_map.score(Workspace.at(tmp_path), {"category_ids": [1]})
    assert only_a.metrics["AP_per_category"] == {"a": pytest.approx(1.0)}
    assert everything.summary["mAP"] == pytest.approx(0.5)
    assert only_a.summary["mAP"] == pytest.approx(1.0)


def test_params_reach_the_evaluation(tmp_path: Path) -> None:
    pred = [
        {"image_id": "img_001", "bbox": [12, 10, 50, 60], "category_id": 1, "score": 0.9},
        {"image_id": "img_002", "bbox": [30, 0, 200, 150], "category_id": 1, "score": 0.7},
    ]
    ws = workspace(tmp_path, README_GT, pred)
    default = detection_map.score(ws, {})
    only_half = detection_map.score(ws, {"iou_thresholds": [0.5], "max_dets": [1, 5, 100]})
    assert only_half.metrics["AP"] == only_half.metrics["AP50"]  # a single threshold: the same
    assert only_half.metrics["AP75"] == -1.0  # 0.75 is not a threshold any more
    assert default.metrics["AP"] < only_half.metrics["AP"]
    no_hundred = detection_map.score(ws, {"max_dets": [1, 10, 50]})
    assert no_hundred.summary["mAP"] == -1.0  # pycocotools reads AP at maxDets=100 only
    assert no_hundred.metrics["AR100"] == default.metrics["AR100"]  # AR100 reads max_dets[2]


def test_an_ignore_key_has_no_effect_as_in_pycocotools(tmp_path: Path) -> None:
    gt = [{"image_id": "a", "bbox": [0, 0, 10, 10], "category_id": 1, "ignore": 1}]
    pred = [{"image_id": "a", "bbox": [0, 0, 10, 10], "category_id": 1, "score": 1.0}]
    result = detection_map.score(workspace(tmp_path, gt, pred), {})
    assert result.summary["mAP"] == pytest.approx(1.0)  # still a normal, matchable box
