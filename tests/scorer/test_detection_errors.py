"""Bad input to detection_map: every case ends in its own error code, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.scorer.builtin.detection import detection_map
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.workspace import Workspace

GT: dict[str, Any] = {
    "images": [{"id": 1}, {"id": 2}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [0, 0, 10, 10],
            "area": 100,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 2,
            "category_id": 2,
            "bbox": [5, 5, 20, 20],
            "area": 400,
            "iscrowd": 0,
        },
    ],
}
GOOD_DET: dict[str, Any] = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}


def workspace(
    tmp_path: Path,
    gt: Any = GT,
    pred: Any = (GOOD_DET,),
    *,
    raw_pred: str | None = None,
    raw_gt: str | None = None,
) -> Workspace:
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    (tmp_path / "input" / "gt.json").write_text(raw_gt if raw_gt is not None else json.dumps(gt))
    if pred is not None:
        text = raw_pred if raw_pred is not None else json.dumps(list(pred))
        (tmp_path / "output" / "pred.json").write_text(text)
    return Workspace.at(tmp_path)


def score_error(ws: Workspace, params: dict[str, Any] | None = None) -> AutoscorerError:
    with pytest.raises(AutoscorerError) as info:
        detection_map.score(ws, params or {})
    return info.value


def test_valid_input_scores(tmp_path: Path) -> None:
    result = detection_map.score(workspace(tmp_path), {})
    assert 0 < result.summary["mAP"] <= 1


def test_missing_prediction_file(tmp_path: Path) -> None:
    err = score_error(workspace(tmp_path, pred=None))
    assert err.code is ErrorCode.MISSING_FILE
    assert err.details["path"] == "output/pred.json"


@pytest.mark.parametrize("text", ["[{", "not json", "\xff\xfe"])
def test_broken_prediction_json(tmp_path: Path, text: str) -> None:
    ws = workspace(tmp_path, raw_pred=text)
    if text.startswith("\xff"):
        (tmp_path / "output" / "pred.json").write_bytes(b"\xff\xfe[")
    err = score_error(ws)
    assert err.code is ErrorCode.PARSE_ERROR
    assert err.stage is Stage.VALIDATION
    assert err.details["file"] == "output/pred.json"


def test_broken_ground_truth_json(tmp_path: Path) -> None:
    err = score_error(workspace(tmp_path, raw_gt='{"images": ['))
    assert err.code is ErrorCode.PARSE_ERROR
    assert err.details["file"] == "input/gt.json"


def test_deeply_nested_json_is_a_parse_error(tmp_path: Path) -> None:
    err = score_error(workspace(tmp_path, raw_pred="[" * 100_000))
    assert err.code is ErrorCode.PARSE_ERROR


BAD_DETECTIONS = [
    ("not a list", {"image_id": 1}),
    ("record not an object", ["x"]),
    ("missing score", {k: v for k, v in GOOD_DET.items() if k != "score"}),
    ("bbox of 3", {**GOOD_DET, "bbox": [0, 0, 10]}),
    ("bbox not a list", {**GOOD_DET, "bbox": "0,0,1,1"}),
    ("bbox with a string", {**GOOD_DET, "bbox": [0, 0, "10", 10]}),
    ("bbox with a bool", {**GOOD_DET, "bbox": [0, 0, True, 10]}),
    ("negative width", {**GOOD_DET, "bbox": [0, 0, -1, 10]}),
    ("negative height", {**GOOD_DET, "bbox": [0, 0, 1, -0.5]}),
    ("score string", {**GOOD_DET, "score": "0.9"}),
    ("score null", {**GOOD_DET, "score": None}),
    ("image id bool", {**GOOD_DET, "image_id": True}),
    ("image id list", {**GOOD_DET, "image_id": [1]}),
    ("unknown category", {**GOOD_DET, "category_id": 7}),
    ("category id as string", {**GOOD_DET, "category_id": "1"}),
]


@pytest.mark.parametrize(("label", "bad"), BAD_DETECTIONS, ids=[b[0] for b in BAD_DETECTIONS])
def test_bad_detections_are_bad_format(tmp_path: Path, label: str, bad: Any) -> None:
    if label == "not a list":
        ws = workspace(tmp_path, raw_pred=json.dumps(bad))
    else:
        records = bad if isinstance(bad, list) else [bad]
        ws = workspace(tmp_path, pred=[GOOD_DET, GOOD_DET, *records, GOOD_DET])
    err = score_error(ws)
    assert err.code is ErrorCode.BAD_FORMAT, err.message
    assert err.details["file"] == "output/pred.json"
    if label != "not a list":
        assert err.details["indices"] == [2]
        assert err.details["count"] == 1


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("field", ["score", "bbox"])
def test_non_finite_numbers_are_bad_format(tmp_path: Path, literal: str, field: str) -> None:
    good = json.dumps(GOOD_DET)
    if field == "score":
        bad = good.replace('"score": 0.9', f'"score": {literal}')
    else:
        bad = good.replace('"bbox": [0, 0, 10, 10]', f'"bbox": [0, {literal}, 10, 10]')
    assert bad != good
    err = score_error(workspace(tmp_path, raw_pred=f"[{good}, {bad}]"))
    assert err.code is ErrorCode.BAD_FORMAT
    assert err.details["indices"] == [1]
    assert ("NaN or infinite" in err.message) or ("must be" in err.message)


def test_huge_integer_is_bad_format(tmp_path: Path) -> None:
    bad = json.dumps({**GOOD_DET, "bbox": [0, 10**400, 10, 10]})
    err = score_error(workspace(tmp_path, raw_pred=f"[{bad}]"))
    assert err.code is ErrorCode.BAD_FORMAT
    assert err.details["indices"] == [0]


def test_only_a_few_offenders_are_listed(tmp_path: Path) -> None:
    bad = {**GOOD_DET, "score": None}
    err = score_error(workspace(tmp_path, pred=[GOOD_DET] + [bad] * 50))
    assert err.details["indices"] == [1, 2, 3, 4, 5]
    assert err.details["count"] == 50
    assert len(err.details["problems"]) == 5


@pytest.mark.parametrize("image_id", [99, "1", 1.5])
def test_detection_on_unknown_image_is_mismatch(tmp_path: Path, image_id: Any) -> None:
    err = score_error(workspace(tmp_path, pred=[GOOD_DET, {**GOOD_DET, "image_id": image_id}]))
    assert err.code is ErrorCode.MISMATCH
    assert err.details["indices"] == [1]
    assert err.details["image_ids"] == [image_id]


def test_format_errors_are_reported_before_mismatches(tmp_path: Path) -> None:
    pred = [{**GOOD_DET, "image_id": 99}, {**GOOD_DET, "score": "x"}]
    assert score_error(workspace(tmp_path, pred=pred)).code is ErrorCode.BAD_FORMAT


def _ann(**changes: Any) -> dict[str, Any]:
    return {**GT["annotations"][0], **changes}


BAD_GROUND_TRUTH = [
    ("neither object nor list", 42),
    ("no annotations key", {"images": [], "categories": []}),
    ("image without id", {**GT, "images": [{"file_name": "a.jpg"}]}),
    ("image ids mixed", {**GT, "images": [{"id": 1}, {"id": "2"}]}),
    ("image id float", {**GT, "images": [{"id": 1.0}]}),
    ("annotation on unknown image", {**GT, "annotations": [_ann(image_id=5)]}),
    ("annotation of unknown category", {**GT, "annotations": [_ann(category_id=5)]}),
    ("duplicate annotation id", {**GT, "annotations": [_ann(), _ann()]}),
    ("iscrowd 2", {**GT, "annotations": [_ann(iscrowd=2)]}),
    ("negative area", {**GT, "annotations": [_ann(area=-1)]}),
    ("area string", {**GT, "annotations": [_ann(area="100")]}),
    ("id string", {**GT, "annotations": [_ann(id="a")]}),
    ("bbox short", {**GT, "annotations": [_ann(bbox=[1, 2])]}),
    ("simplified without bbox", [{"image_id": "a", "category_id": 1}]),
    (
        "simplified ids mixed",
        [
            {"image_id": "a", "category_id": 1, "bbox": [0, 0, 1, 1]},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]},
        ],
    ),
    ("simplified record not object", [[0, 0, 1, 1]]),
]


@pytest.mark.parametrize(("label", "gt"), BAD_GROUND_TRUTH, ids=[b[0] for b in BAD_GROUND_TRUTH])
def test_bad_ground_truth_is_bad_format(tmp_path: Path, label: str, gt: Any) -> None:
    err = score_error(workspace(tmp_path, gt=gt, pred=[]))
    assert err.code is ErrorCode.BAD_FORMAT, label
    assert err.details["file"] == "input/gt.json"


@pytest.mark.parametrize(
    "params",
    [
        {"iou_threshold": [0.5]},
        {"iou_thresholds": [0.0, 0.5]},
        {"iou_thresholds": [0.5, 1.01]},
        {"iou_thresholds": [0.75, 0.5]},
        {"iou_thresholds": []},
        {"max_dets": [1, 10]},
        {"max_dets": [10, 1, 100]},
        {"max_dets": [0, 1, 100]},
        {"area_ranges": {"all": [10, 0]}},
        {"area_ranges": {}},
        {"area_ranges": {"all": [0, "inf"]}},
    ],
)
def test_bad_params(tmp_path: Path, params: dict[str, Any]) -> None:
    assert score_error(workspace(tmp_path), params).code is ErrorCode.BAD_PARAMS


def test_unknown_category_filter_is_bad_params(tmp_path: Path) -> None:
    err = score_error(workspace(tmp_path), {"category_ids": [1, 9]})
    assert err.code is ErrorCode.BAD_PARAMS
    assert err.details["unknown"] == [9]
