"""Fuzz the CLI's ``score`` path (argument parsing, meta.json, the scoring worker, the built-in
scorers, the envelope): whatever the files and params, it exits 0 or 1 with a standard envelope in
strict JSON, and nothing ever prints a traceback. A built-in scorer never crashes on input either
(no SCORE_ERROR / INTERNAL_ERROR: bad input is the participant's or organiser's standard code).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.cli.main import main
from shared.errors import ErrorCode, Fault, Stage

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CRASHES = {ErrorCode.SCORE_ERROR.value, ErrorCode.INTERNAL_ERROR.value}

CSV_SCORERS = {
    "classification_f1": ("id,label", "id,label"),
    "classification_accuracy": ("id,label", "id,label"),
    "regression_rmse": ("id,value", "id,value"),
}

cells = st.one_of(
    st.sampled_from(["a", "b", "1", "2.5", "nan", "inf", "-inf", "", " ", '"', "1e999", "0x1"]),
    st.text(max_size=6),
)
rows = st.lists(st.tuples(cells, cells), max_size=8)


@st.composite
def csv_bytes(draw: st.DrawFn, header: str) -> bytes:
    """Mostly-plausible CSV (a header and id,value rows), sometimes raw bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=200))
    lines = [draw(st.sampled_from([header, header.upper(), "id", "", "x,y,z"]))]
    lines += [f"{a},{b}" for a, b in draw(rows)]
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = ending.join(lines) + draw(st.sampled_from(["", ending]))
    return text.encode(draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])), errors="replace")


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
bbox_records = st.fixed_dictionaries(
    {
        "image_id": st.one_of(st.integers(0, 3), st.text(max_size=2), json_values),
        "category_id": st.one_of(st.integers(0, 3), json_values),
        "bbox": st.one_of(
            st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=4, max_size=4),
            json_values,
        ),
        "score": st.one_of(st.floats(allow_nan=True, allow_infinity=True), json_values),
    },
    optional={"area": json_values, "iscrowd": json_values, "id": json_values},
)
detection_docs = st.one_of(
    st.lists(bbox_records, max_size=5),
    st.fixed_dictionaries(
        {
            "images": st.lists(st.fixed_dictionaries({"id": st.integers(0, 3)}), max_size=3),
            "annotations": st.lists(bbox_records, max_size=4),
            "categories": st.lists(st.fixed_dictionaries({"id": st.integers(0, 3)}), max_size=3),
        }
    ),
    json_values,
)


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _deep(depth: int, leaf: Any = 1) -> str:
    return "[" * depth + json.dumps(leaf) + "]" * depth


def _workspace(base: Path, meta: bytes | str, files: dict[str, bytes]) -> Path:
    root = Path(tempfile.mkdtemp(dir=base))
    (root / "input").mkdir()
    (root / "output").mkdir()
    (root / "meta.json").write_bytes(meta.encode() if isinstance(meta, str) else meta)
    for relative, data in files.items():
        (root / relative).write_bytes(data)
    return root


def _score(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["score", *argv, "--json"])
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code in (0, 1)

    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} in the JSON output")

    envelope = json.loads(out, parse_constant=refuse)
    assert envelope["status"] == ("success" if code == 0 else "error")
    if code == 1:
        error = envelope["error"]
        assert ErrorCode(error["code"]) and Stage(error["stage"]) and Fault(error["fault"])
        assert isinstance(error["message"], str) and len(error["message"]) < 20_000
        assert len(json.dumps(error)) < 100_000  # never an unbounded echo of the input
        assert error["code"] not in CRASHES, error
    return code, envelope


@FUZZ
@given(scorer=st.sampled_from(sorted(CSV_SCORERS)), data=st.data())
def test_csv_scorers_on_any_bytes(tmp_path, capfd, scorer, data):
    gt_header, pred_header = CSV_SCORERS[scorer]
    files = {
        "input/gt.csv": data.draw(csv_bytes(gt_header), "gt"),
        "output/pred.csv": data.draw(csv_bytes(pred_header), "pred"),
    }
    ws = _workspace(tmp_path, json.dumps({"scorer": scorer}), files)
    _score(capfd, str(ws))


@FUZZ
@given(gt=detection_docs, pred=detection_docs, raw=st.booleans())
def test_detection_on_any_json(tmp_path, capfd, gt, pred, raw):
    files = {"input/gt.json": _dump(gt), "output/pred.json": _dump(pred)}
    if raw:
        files["output/pred.json"] = files["output/pred.json"][: len(files["output/pred.json"]) // 2]
    ws = _workspace(tmp_path, json.dumps({"scorer": "detection_map"}), files)
    _score(capfd, str(ws))


@FUZZ
@given(
    scorer=st.sampled_from([*sorted(CSV_SCORERS), "detection_map", "nope"]),
    params=json_values,
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_any_meta_json_params(tmp_path, capfd, scorer, params, extra):
    meta = {"scorer": scorer, "params": params, **extra}
    files = {
        "input/gt.csv": b"id,label\na,x\nb,y\n",
        "output/pred.csv": b"id,label\na,x\nb,x\n",
    }
    ws = _workspace(tmp_path, json.dumps(meta, allow_nan=True), files)
    _score(capfd, str(ws))


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
@pytest.mark.parametrize("where", ["params", "meta", "gt.json", "pred.json"])
def test_deep_nesting_is_a_clean_error(tmp_path, capfd, depth, where):
    deep = _deep(depth)
    meta = '{"scorer": "detection_map"}'
    files = {"input/gt.json": b"[]", "output/pred.json": b"[]"}
    if where == "params":
        meta = '{"scorer": "detection_map", "params": {"x": ' + deep + "}}"
    elif where == "meta":
        meta = deep
    else:
        files["input/gt.json" if where == "gt.json" else "output/pred.json"] = deep.encode()
    ws = _workspace(tmp_path, meta, files)
    code, envelope = _score(capfd, str(ws))
    assert code == 1
    expected_fault = "participant" if where == "pred.json" else "organiser"
    assert envelope["error"]["fault"] == expected_fault, envelope["error"]


def test_deep_params_on_the_command_line_are_a_usage_error(tmp_path, capfd):
    ws = _workspace(tmp_path, '{"scorer": "classification_f1"}', {})
    with pytest.raises(SystemExit) as caught:
        main(["score", str(ws), "--params", '{"a": ' + _deep(10_000) + "}"])
    _, err = capfd.readouterr()
    assert caught.value.code == 2
    assert "deeper than" in err and "Traceback" not in err


@FUZZ
@given(meta=st.one_of(st.binary(max_size=300), json_values.map(_dump)))
def test_any_meta_json_bytes(tmp_path, capfd, meta):
    files = {"input/gt.csv": b"id,label\na,x\n", "output/pred.csv": b"id,label\na,x\n"}
    ws = _workspace(tmp_path, meta, files)
    code, envelope = _score(capfd, str(ws))
    if code == 1:
        assert envelope["error"]["fault"] in ("organiser", "participant"), envelope["error"]


def test_large_params_within_the_depth_limit_are_not_echoed(tmp_path, capfd):
    big = "k" * 200_000
    params = {big: {big[:50_000]: [1] * 10}, "nested": json.loads(_deep(25, {big: 1}))}
    ws = _workspace(tmp_path, json.dumps({"scorer": "classification_f1", "params": params}), {})
    code, envelope = _score(capfd, str(ws))
    assert code == 1 and envelope["error"]["code"] == "BAD_PARAMS"
    assert envelope["error"]["fault"] == "organiser"


@pytest.mark.parametrize(
    ("gt", "pred"),
    [
        (b"id,label\n" + b"a" * 1_000_000 + b",x\n", b"id,label\nb,x\n"),  # MISMATCH
        (b"id,label\na,x\n", b"id,label\n" + b"z" * 1_000_000 + b",x\n"),
        (b"id," + b"h" * 60_000 + b"\na,x\n", b"id,label\na,x\n"),  # a header of 60 KB
        (b"id,label\nq,x\nq,y\n".replace(b"q", b"q" * 500_000), b"id,label\na,x\n"),  # duplicates
    ],
)
def test_huge_cells_are_not_echoed(tmp_path, capfd, gt, pred):
    files = {"input/gt.csv": gt, "output/pred.csv": pred}
    ws = _workspace(tmp_path, '{"scorer": "classification_f1"}', files)
    code, envelope = _score(capfd, str(ws))
    assert code == 1 and len(json.dumps(envelope["error"])) < 10_000


HUGE = "i" * 1_000_000


@pytest.mark.parametrize(
    ("gt", "pred"),
    [
        (
            {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1}]},
            [{"image_id": HUGE, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}],
        ),
        (
            {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1}]},
            [{"image_id": 1, "category_id": HUGE, "bbox": [0, 0, 1, 1], "score": 0.5}],
        ),
        (
            {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1}]},
            [{"image_id": 1, "category_id": 1, "bbox": [HUGE, 0, 1, 1], "score": 0.5}],
        ),
        (
            {"images": [{"id": HUGE}], "annotations": [{"image_id": 2}], "categories": [{"id": 1}]},
            [],
        ),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], HUGE: 1, "iscrowd": HUGE}], []),
    ],
)
def test_huge_detection_values_are_not_echoed(tmp_path, capfd, gt, pred):
    files = {"input/gt.json": _dump(gt), "output/pred.json": _dump(pred)}
    ws = _workspace(tmp_path, '{"scorer": "detection_map"}', files)
    code, envelope = _score(capfd, str(ws))
    assert code == 1 and len(json.dumps(envelope["error"])) < 10_000, envelope["error"]["code"]


def test_a_deeply_nested_image_id_is_a_clean_mismatch(tmp_path, capfd):
    gt = {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1}]}
    pred = '[{"image_id": ' + _deep(900) + ', "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]'
    files = {"input/gt.json": _dump(gt), "output/pred.json": pred.encode()}
    ws = _workspace(tmp_path, '{"scorer": "detection_map"}', files)
    code, envelope = _score(capfd, str(ws))
    assert code == 1 and envelope["error"]["fault"] == "participant"
