from pathlib import Path

from shared.errors import CODE_INFO, AutoscorerError, ErrorCode, Fault, Stage

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ERRORS.md"


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


def test_error_info_round_trip():
    exc = AutoscorerError(ErrorCode.MISMATCH, "ids differ", stage=Stage.SCORING, details={"n": 2})
    info = exc.to_info()
    assert info.fault is Fault.PARTICIPANT and info.retryable is False
    again = AutoscorerError.from_info(info)
    assert (again.code, again.stage, again.details) == (exc.code, exc.stage, exc.details)
