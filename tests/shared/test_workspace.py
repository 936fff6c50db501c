import json
import os

import pytest

from shared.errors import AutoscorerError, ErrorCode
from shared.models import JobSpec
from shared.workspace import Workspace, is_ground_truth, prepare_participant_view


def _ws(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Workspace.at(tmp_path)


def test_view_hides_every_ground_truth_file_and_keeps_the_rest(tmp_path):
    ws = _ws(
        tmp_path,
        {
            "meta.json": json.dumps({"scorer": "s"}),
            "input/gt.csv": "id,label\n1,a\n",
            "input/GT.JSON": "{}",
            "input/gt/labels.txt": "secret",
            "input/ground_truth_v2.parquet": "secret",
            "input/data/features.csv": "id,x\n1,0.5\n",
            "input/data/gt.csv": "nested secret",
            "input/readme.txt": "hello",
        },
    )
    view = prepare_participant_view(ws, ws.load_spec())
    seen = sorted(p.relative_to(view).as_posix() for p in view.rglob("*") if p.is_file())
    assert seen == ["input/data/features.csv", "input/readme.txt", "meta.json"]
    assert "secret" not in "".join(p.read_text() for p in view.rglob("*") if p.is_file())


def test_view_refuses_symlinks_that_could_point_at_ground_truth(tmp_path):
    ws = _ws(tmp_path, {"meta.json": json.dumps({"scorer": "s"}), "input/gt.csv": "secret"})
    os.symlink(tmp_path / "input" / "gt.csv", tmp_path / "input" / "innocent.csv")
    view = prepare_participant_view(ws, ws.load_spec())
    assert not (view / "input" / "innocent.csv").exists()


def test_view_is_rebuilt_so_nothing_stale_survives(tmp_path):
    ws = _ws(tmp_path, {"meta.json": json.dumps({"scorer": "s"}), "input/a.txt": "a"})
    view = prepare_participant_view(ws, ws.load_spec())
    (view / "input" / "planted.txt").write_text("x")
    view = prepare_participant_view(ws, ws.load_spec())
    assert not (view / "input" / "planted.txt").exists()


def test_custom_ground_truth_globs(tmp_path):
    ws = _ws(tmp_path, {"input/answers.csv": "secret", "input/x.csv": "ok"})
    spec = JobSpec(scorer="s", ground_truth=["answers.*"])
    view = prepare_participant_view(ws, spec)
    assert sorted(p.name for p in (view / "input").iterdir()) == ["x.csv"]


@pytest.mark.parametrize(
    ("rel", "hidden"),
    [
        ("gt.csv", True),
        ("sub/gt.json", True),
        ("gt/x", True),
        ("Gt.Csv", True),
        ("gtx.csv", False),
        ("data/pgt.csv", False),
        ("ground_truth.csv", True),
    ],
)
def test_is_ground_truth(rel, hidden):
    assert is_ground_truth(rel, ["gt.*", "gt/", "ground_truth*"]) is hidden


def test_load_spec_errors_have_codes(tmp_path):
    ws = Workspace.at(tmp_path)
    with pytest.raises(AutoscorerError) as missing:
        ws.load_spec()
    assert missing.value.code is ErrorCode.MISSING_FILE
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(AutoscorerError) as broken:
        ws.load_spec()
    assert broken.value.code is ErrorCode.PARSE_ERROR
    (tmp_path / "meta.json").write_text(json.dumps({"scorer": "s", "time_limit": -1}))
    with pytest.raises(AutoscorerError) as invalid:
        ws.load_spec()
    assert invalid.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
    assert invalid.value.details["errors"][0]["loc"] == ["time_limit"] or tuple(
        invalid.value.details["errors"][0]["loc"]
    ) == ("time_limit",)


def test_workspace_must_be_a_directory(tmp_path):
    with pytest.raises(AutoscorerError) as err:
        Workspace.at(tmp_path / "nope")
    assert err.value.code is ErrorCode.WORKSPACE_INVALID
