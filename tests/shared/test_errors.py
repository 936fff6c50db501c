"""The error taxonomy: one table in shared/errors.py, the same table in docs/ERRORS.md, and every
raise site in shared/ and services/ within it (stage and fault)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from shared.errors import (
    CODE_INFO,
    AutoscorerError,
    ErrorCode,
    Fault,
    Stage,
    data_error,
    fault_of_file,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "ERRORS.md"
HELPER_STAGES = {
    "validation_error": Stage.VALIDATION,
    "scoring_error": Stage.SCORING,
    "execution_error": Stage.EXECUTION,
    "api_error": Stage.VALIDATION,
    "HttpError": Stage.VALIDATION,
}
DYNAMIC_STAGE_HELPERS = {"data_error"}  # stage follows the file; checked by its own test


def test_every_code_has_fault_and_retry_policy():
    assert set(CODE_INFO) == set(ErrorCode)


def test_only_platform_faults_are_retryable():
    for code, info in CODE_INFO.items():
        if info.retryable:
            assert info.fault is Fault.PLATFORM, code


def test_every_code_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    missing = [code.value for code in ErrorCode if f"`{code.value}`" not in text]
    assert missing == []


def _documented() -> dict[str, tuple[set[str], list[str], bool]]:
    """code -> (stages, faults (usual first), retryable) from the docs' code table."""
    rows: dict[str, tuple[set[str], list[str], bool]] = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not re.fullmatch(r"`[A-Z_]+`", cells[0]):
            continue
        stages = {s.strip() for s in cells[1].split("/")}
        if stages == {"any"}:
            stages = {s.value for s in Stage}
        faults = [f.strip() for f in cells[2].split("/")]
        rows[cells[0].strip("`")] = (stages, faults, {"yes": True, "no": False}[cells[3]])
    return rows


def test_the_docs_table_is_the_code_table():
    documented = _documented()
    assert set(documented) == {code.value for code in ErrorCode}
    for code, info in CODE_INFO.items():
        stages, faults, retryable = documented[code.value]
        assert stages == {s.value for s in info.stages}, f"{code}: stage"
        assert faults == [info.fault.value, *(f.value for f in info.also)], f"{code}: fault"
        assert retryable == info.retryable, f"{code}: retryable"


def _raise_sites() -> list[tuple[str, ErrorCode, Stage | None, str | None]]:
    """(where, code, literal stage or None, literal fault or None) of every error built with a
    literal ErrorCode in shared/ and services/."""
    sites = []
    for path in sorted(
        [*ROOT.joinpath("shared").rglob("*.py"), *ROOT.joinpath("services").rglob("*.py")]
    ):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            code = _literal(
                node.args[1]
                if name == "HttpError" and len(node.args) > 1
                else node.args[0]
                if node.args
                else None,
                "ErrorCode",
            )
            if name == "internal_error":
                code = "INTERNAL_ERROR"
            if code is None or name in DYNAMIC_STAGE_HELPERS:
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            stage = _literal(keywords.get("stage"), "Stage")
            fault = _literal(keywords.get("fault"), "Fault")
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            known = Stage[stage] if stage else HELPER_STAGES.get(name)
            sites.append((where, ErrorCode[code], known, fault))
    return sites


def _literal(node: ast.expr | None, enum: str) -> str | None:
    is_member = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
    if is_member and node.value.id == enum:  # type: ignore[union-attr]
        return node.attr  # type: ignore[union-attr]
    return None


def test_every_raise_site_uses_a_stage_and_fault_its_code_allows():
    sites = _raise_sites()
    assert len(sites) > 100  # the walk finds them
    wrong = []
    for where, code, stage, fault in sites:
        info = CODE_INFO[code]
        if stage is not None and stage not in info.stages:
            wrong.append(f"{where}: {code.value} at stage {stage.value}")
        if fault is not None and Fault[fault] not in (info.fault, *info.also):
            wrong.append(f"{where}: {code.value} as {fault.lower()} fault")
    assert wrong == []


def test_error_info_round_trip_keeps_an_overridden_fault():
    exc = AutoscorerError(ErrorCode.MISMATCH, "ids differ", stage=Stage.SCORING, details={"n": 2})
    info = exc.to_info()
    assert info.fault is Fault.PARTICIPANT and info.retryable is False
    again = AutoscorerError.from_info(info)
    assert (again.code, again.stage, again.details) == (exc.code, exc.stage, exc.details)
    gt = AutoscorerError(
        ErrorCode.BAD_FORMAT, "gt", stage=Stage.CONFIG, fault=Fault.ORGANISER
    ).to_info()
    assert AutoscorerError.from_info(gt).to_info() == gt


def test_only_a_platform_fault_is_retryable_even_when_overridden():
    moved = AutoscorerError(
        ErrorCode.EXEC_ERROR, "x", stage=Stage.EXECUTION, fault=Fault.PARTICIPANT
    )
    assert (moved.fault, moved.retryable) == (Fault.PARTICIPANT, False)
    kept = AutoscorerError(ErrorCode.EXEC_ERROR, "x", stage=Stage.EXECUTION)
    assert (kept.fault, kept.retryable) == (Fault.PLATFORM, True)


@pytest.mark.parametrize(
    ("relative", "fault", "stage"),
    [
        ("input/gt.csv", Fault.ORGANISER, Stage.CONFIG),
        ("./input/gt.json", Fault.ORGANISER, Stage.CONFIG),
        ("meta.json", Fault.ORGANISER, Stage.CONFIG),
        ("output/pred.csv", Fault.PARTICIPANT, Stage.VALIDATION),
        ("submission/predict.py", Fault.PARTICIPANT, Stage.VALIDATION),
        ("inputs/x.csv", Fault.PARTICIPANT, Stage.VALIDATION),
    ],
)
def test_data_errors_belong_to_whoever_owns_the_file(relative, fault, stage):
    assert fault_of_file(relative) is fault
    error = data_error(ErrorCode.BAD_FORMAT, "bad", file=relative)
    assert (error.fault, error.stage, error.details["file"]) == (fault, stage, relative)
    assert error.stage in CODE_INFO[ErrorCode.BAD_FORMAT].stages
