"""One error taxonomy for the whole platform.

Every failure the platform reports is an :class:`AutoscorerError` carrying a standard
``code``, the ``stage`` it happened in, a human ``message`` and machine-readable ``details``.
Each code says whose fault it is by default (participant, organiser or platform), whether
retrying can help and in which stages it may be raised, so that boundaries (CLI, HTTP, bus
consumers) can act on it without guessing.

Whose fault (docs/ERRORS.md): organiser data and configuration (ground truth, scorers, meta.json,
settings) -> organiser; the participant's image, command and output -> participant;
infrastructure -> platform, the only retryable fault. A data code such as ``MISSING_FILE`` is the
participant's by default; a raise site about the organiser's data passes ``fault=ORGANISER``
(see :func:`fault_of_file`). Only a platform fault is ever retryable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Stage(StrEnum):
    VALIDATION = "validation"
    EXECUTION = "execution"
    SCORING = "scoring"
    CONFIG = "config"
    PLATFORM = "platform"


class Fault(StrEnum):
    PARTICIPANT = "participant"  # the submission is wrong: never retried, counts against it
    ORGANISER = "organiser"  # the competition setup (ground truth, scorer, config) is wrong
    PLATFORM = "platform"  # our side failed: retried where retryable, never held against anyone


@dataclass(frozen=True, slots=True)
class CodeInfo:
    fault: Fault
    retryable: bool
    summary: str
    stages: tuple[Stage, ...]
    """the stages a raise site may give this code (the first is the usual one)"""
    also: tuple[Fault, ...] = ()
    """faults a raise site may give instead of ``fault`` (e.g. organiser for ground truth)"""


class ErrorCode(StrEnum):
    # Workspace and input validation / scoring (original design notes)
    MISSING_FILE = "MISSING_FILE"
    BAD_FORMAT = "BAD_FORMAT"
    PARSE_ERROR = "PARSE_ERROR"
    MISMATCH = "MISMATCH"
    SCORE_ERROR = "SCORE_ERROR"
    SCORE_TIMEOUT = "SCORE_TIMEOUT"
    SCORER_NOT_FOUND = "SCORER_NOT_FOUND"
    SCORER_LOAD_ERROR = "SCORER_LOAD_ERROR"
    SCORER_CONFLICT = "SCORER_CONFLICT"
    BAD_PARAMS = "BAD_PARAMS"
    CONFIG_VALIDATION_ERROR = "CONFIG_VALIDATION_ERROR"
    WORKSPACE_INVALID = "WORKSPACE_INVALID"
    # Execution (original design notes, plus what the sandbox needs)
    IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"
    IMAGE_NOT_PRESENT = "IMAGE_NOT_PRESENT"
    IMAGE_NOT_ALLOWED = "IMAGE_NOT_ALLOWED"
    IMAGE_PULL_FAILED = "IMAGE_PULL_FAILED"
    IMAGE_LOAD_FAILED = "IMAGE_LOAD_FAILED"
    CONTAINER_CREATE_FAILED = "CONTAINER_CREATE_FAILED"
    CONTAINER_WAIT_FAILED = "CONTAINER_WAIT_FAILED"
    CONTAINER_EXIT_NONZERO = "CONTAINER_EXIT_NONZERO"
    CONTAINER_FAILED = "CONTAINER_FAILED"
    CONTAINER_OOM = "CONTAINER_OOM"
    TIMEOUT_ERROR = "TIMEOUT_ERROR"
    RESOURCE_ERROR = "RESOURCE_ERROR"
    RESOURCE_LIMIT_EXCEEDED = "RESOURCE_LIMIT_EXCEEDED"
    OUTPUT_MISSING = "OUTPUT_MISSING"
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
    EXEC_ERROR = "EXEC_ERROR"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    BACKEND_NOT_FOUND = "BACKEND_NOT_FOUND"
    CANCELLED = "CANCELLED"
    # API
    AUTH_REQUIRED = "AUTH_REQUIRED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    UPLOAD_REJECTED = "UPLOAD_REJECTED"
    INVALID_STATE = "INVALID_STATE"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    # Platform
    BUS_ERROR = "BUS_ERROR"
    STORE_ERROR = "STORE_ERROR"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def info(self) -> CodeInfo:
        return CODE_INFO[self]


_P, _O, _X = Fault.PARTICIPANT, Fault.ORGANISER, Fault.PLATFORM
_V, _E, _S, _C, _L = (
    Stage.VALIDATION,
    Stage.EXECUTION,
    Stage.SCORING,
    Stage.CONFIG,
    Stage.PLATFORM,
)
_DATA = (_V, _C, _L)  # a participant's file at validation, the organiser's at config, an event
_DATA_FAULTS = (_O, _X)  # ... the organiser's file is the organiser's fault, an event ours

CODE_INFO: dict[ErrorCode, CodeInfo] = {
    ErrorCode.MISSING_FILE: CodeInfo(_P, False, "a required file is missing", (_V, _C), (_O,)),
    ErrorCode.BAD_FORMAT: CodeInfo(
        _P, False, "a file parses but breaks the expected format", _DATA, _DATA_FAULTS
    ),
    ErrorCode.PARSE_ERROR: CodeInfo(
        _P, False, "a file cannot be parsed at all", _DATA, _DATA_FAULTS
    ),
    ErrorCode.MISMATCH: CodeInfo(
        _P, False, "predictions do not line up with the ground truth ids", (_V,)
    ),
    ErrorCode.SCORE_ERROR: CodeInfo(
        _O, False, "the scorer failed or returned a non-finite metric", (_S,)
    ),
    ErrorCode.SCORE_TIMEOUT: CodeInfo(_O, False, "the scorer ran past its time limit", (_S,)),
    ErrorCode.SCORER_NOT_FOUND: CodeInfo(
        _O,
        False,
        "no scorer is registered under that name (or at the version a spec pins)",
        (_S, _C, _V),
        (_P,),  # a submission pinning a version the gateway does not have: its caller's
    ),
    ErrorCode.SCORER_LOAD_ERROR: CodeInfo(
        _O, False, "a scorer file failed to import or register", (_C,)
    ),
    ErrorCode.SCORER_CONFLICT: CodeInfo(_O, False, "two scorers claim the same name", (_C,)),
    ErrorCode.BAD_PARAMS: CodeInfo(
        _O, False, "scorer params do not match the scorer's schema", (_V,)
    ),
    ErrorCode.CONFIG_VALIDATION_ERROR: CodeInfo(
        _O, False, "settings, meta.json or a request are invalid", (_C, _V, _E, _L), (_P,)
    ),
    ErrorCode.WORKSPACE_INVALID: CodeInfo(_O, False, "the workspace layout is broken", (_V,)),
    ErrorCode.IMAGE_NOT_FOUND: CodeInfo(
        _P, False, "the image does not exist in the registry", (_E,)
    ),
    ErrorCode.IMAGE_NOT_PRESENT: CodeInfo(_P, False, "image absent and pulls forbidden", (_E,)),
    ErrorCode.IMAGE_NOT_ALLOWED: CodeInfo(_P, False, "the image is not on the allow-list", (_E,)),
    ErrorCode.IMAGE_PULL_FAILED: CodeInfo(_X, True, "the registry could not be reached", (_E,)),
    ErrorCode.IMAGE_LOAD_FAILED: CodeInfo(
        _P, False, "the shipped image archive cannot be loaded", (_E,)
    ),
    ErrorCode.CONTAINER_CREATE_FAILED: CodeInfo(
        _X, True, "the engine refused the container", (_E,)
    ),
    ErrorCode.CONTAINER_WAIT_FAILED: CodeInfo(
        _X, True, "the engine lost track of the container", (_E,)
    ),
    ErrorCode.CONTAINER_EXIT_NONZERO: CodeInfo(_P, False, "the participant exited non-zero", (_E,)),
    ErrorCode.CONTAINER_FAILED: CodeInfo(_P, False, "the participant container failed", (_E,)),
    ErrorCode.CONTAINER_OOM: CodeInfo(_P, False, "the participant ran out of memory", (_E,)),
    ErrorCode.TIMEOUT_ERROR: CodeInfo(
        _P, False, "the participant program ran past its time limit", (_E, _L), (_X,)
    ),
    ErrorCode.RESOURCE_ERROR: CodeInfo(_X, True, "resources asked for are unavailable", (_E, _S)),
    ErrorCode.RESOURCE_LIMIT_EXCEEDED: CodeInfo(
        _P, False, "the spec asks for more than the caps", (_C,)
    ),
    ErrorCode.OUTPUT_MISSING: CodeInfo(
        _P, False, "the run produced no expected output file", (_E,)
    ),
    ErrorCode.OUTPUT_TOO_LARGE: CodeInfo(
        _P, False, "the run wrote more output than allowed", (_E,)
    ),
    ErrorCode.EXEC_ERROR: CodeInfo(_X, True, "the executor failed for a platform reason", (_E,)),
    ErrorCode.BACKEND_UNAVAILABLE: CodeInfo(
        _X, True, "the executor backend or a scorer replica cannot be reached", (_E, _S, _L)
    ),
    ErrorCode.BACKEND_NOT_FOUND: CodeInfo(_O, False, "no executor backend has that name", (_C,)),
    ErrorCode.CANCELLED: CodeInfo(_P, False, "the job was cancelled", (_E,)),
    ErrorCode.AUTH_REQUIRED: CodeInfo(_P, False, "no valid API key was given", (_V,)),
    ErrorCode.FORBIDDEN: CodeInfo(_P, False, "the API key's role does not allow this", (_V,)),
    ErrorCode.NOT_FOUND: CodeInfo(_P, False, "no such job, result or resource", (_V,)),
    ErrorCode.UPLOAD_REJECTED: CodeInfo(
        _P, False, "an uploaded archive breaks the upload rules", (_V,)
    ),
    ErrorCode.INVALID_STATE: CodeInfo(
        _P, False, "the job's state does not allow this action", (_V,)
    ),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: CodeInfo(
        _P, False, "an Idempotency-Key was sent again with a different request", (_V,)
    ),
    ErrorCode.BUS_ERROR: CodeInfo(_X, True, "the event bus failed", (_L,)),
    ErrorCode.STORE_ERROR: CodeInfo(_X, True, "the job store failed", (_L,)),
    ErrorCode.DEADLINE_EXCEEDED: CodeInfo(
        _X, True, "nothing moved the job on before its state's deadline", (_E, _S, _V)
    ),
    ErrorCode.INTERNAL_ERROR: CodeInfo(_X, False, "an unexpected platform bug", tuple(Stage)),
}


class ErrorInfo(BaseModel):
    """The standard error, as stored in result.json, events and API responses."""

    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    stage: Stage
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    logs: str | None = None
    fault: Fault
    retryable: bool

    @field_validator("details", mode="after")
    @classmethod
    def _plain_json(cls, details: dict[str, Any]) -> dict[str, Any]:
        """Details as plain JSON values, so the error can always be written and sent (a scorer
        may put a NumPy value or an object in them): other values become their text."""
        try:
            plain = json.loads(json.dumps(details, default=_as_text))
        except (ValueError, TypeError, RecursionError) as exc:
            return {"unrepresentable": f"{type(exc).__name__}: {str(exc)[:200]}"}
        return plain if isinstance(plain, dict) else {"value": plain}


def _as_text(value: object) -> Any:
    tolist = getattr(value, "tolist", None)  # NumPy scalars and (small) arrays
    if callable(tolist) and getattr(value, "size", 0) <= MAX_DETAIL_ITEMS:
        return tolist()
    return str(value)[:MAX_DETAIL_TEXT]


MAX_DETAIL_ITEMS = 100
MAX_DETAIL_TEXT = 1000


class AutoscorerError(Exception):
    """The root of every error AutoScorer raises on purpose.

    ``fault`` overrides the code's usual fault where the same problem can belong to someone else
    (a missing ``input/gt.csv`` is the organiser's, a missing ``output/pred.csv`` the
    participant's). Only a platform fault is retryable, and only if its code is.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        stage: Stage,
        details: dict[str, Any] | None = None,
        logs: str | None = None,
        fault: Fault | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.stage = stage
        self.message = message
        self.details = details or {}
        self.logs = logs
        self._fault = fault

    @property
    def fault(self) -> Fault:
        return self._fault or self.code.info.fault

    @property
    def retryable(self) -> bool:
        return self.code.info.retryable and self.fault is Fault.PLATFORM

    def to_info(self) -> ErrorInfo:
        return ErrorInfo(
            code=self.code,
            stage=self.stage,
            message=self.message,
            details=self.details,
            logs=self.logs,
            fault=self.fault,
            retryable=self.retryable,
        )

    @classmethod
    def from_info(cls, info: ErrorInfo) -> AutoscorerError:
        return cls(
            info.code,
            info.message,
            stage=info.stage,
            details=info.details,
            logs=info.logs,
            fault=info.fault,
        )

    def __repr__(self) -> str:
        return f"AutoscorerError({self.code.value}, {self.stage.value}, {self.message!r})"


def fault_of_file(relative: str) -> Fault:
    """Whose file a workspace-relative path is: ``input/`` and ``meta.json`` are the organiser's
    (ground truth, job config); anything else (``output/``, the submission) the participant's."""
    parts = relative.replace("\\", "/").lstrip("./").split("/")
    return Fault.ORGANISER if parts[0] in ("input", "meta.json") else Fault.PARTICIPANT


def data_error(code: ErrorCode, message: str, *, file: str, **details: Any) -> AutoscorerError:
    """A problem with a workspace file: the organiser's (stage config) or the participant's
    (stage validation), decided by :func:`fault_of_file`; ``details.file`` names the file."""
    fault = fault_of_file(file)
    stage = Stage.CONFIG if fault is Fault.ORGANISER else Stage.VALIDATION
    return AutoscorerError(
        code,
        clip(message, MAX_MESSAGE),
        stage=stage,
        details=clip({"file": file, **details}),
        fault=fault,
    )


MAX_TEXT = 200
MAX_MESSAGE = 2000


def clip(value: Any, limit: int = MAX_TEXT, depth: int = 8) -> Any:
    """``value`` with every string cut to ``limit`` characters (keys too) and nesting cut at
    ``depth``: what an error quotes from a file (ids, values, a header) may be megabytes long."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, dict | list | tuple) and depth <= 0:
        return "…"
    if isinstance(value, dict):
        return {clip(str(k), limit): clip(v, limit, depth - 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clip(item, limit, depth - 1) for item in value]
    return value


def validation_error(
    code: ErrorCode, message: str, *, fault: Fault | None = None, **details: Any
) -> AutoscorerError:
    return AutoscorerError(code, message, stage=Stage.VALIDATION, details=details, fault=fault)


def scoring_error(
    code: ErrorCode, message: str, *, fault: Fault | None = None, **details: Any
) -> AutoscorerError:
    return AutoscorerError(code, message, stage=Stage.SCORING, details=details, fault=fault)


def execution_error(
    code: ErrorCode, message: str, *, fault: Fault | None = None, **details: Any
) -> AutoscorerError:
    return AutoscorerError(code, message, stage=Stage.EXECUTION, details=details, fault=fault)


def internal_error(exc: BaseException, *, stage: Stage) -> AutoscorerError:
    """Wrap an unexpected exception at a boundary; the traceback goes to logs, not to users."""
    return AutoscorerError(
        ErrorCode.INTERNAL_ERROR,
        f"unexpected {type(exc).__name__}: {exc}",
        stage=stage,
        details={"exception": type(exc).__name__},
    )
