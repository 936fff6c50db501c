"""Turn Pod and Job status (API JSON, camelCase) into a verdict with the standard error codes.

The codes match the Docker executor's: image pull back-off → IMAGE_PULL_FAILED (IMAGE_NOT_FOUND
when the registry says the image does not exist), OOMKilled → CONTAINER_OOM, the Job's
DeadlineExceeded → TIMEOUT_ERROR, any other non-zero exit → CONTAINER_EXIT_NONZERO with the log
tail that ``terminationMessagePolicy: FallbackToLogsOnError`` puts in the container status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.executor.kubernetes.names import CONTAINER_NAME
from shared.errors import AutoscorerError, ErrorCode, execution_error

PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff"})
_NOT_FOUND_RE = re.compile(r"not found|manifest unknown|does not exist|NotFound", re.IGNORECASE)
_KILLED_BY_SIGNAL = frozenset({137, 143})
_START_REASONS = frozenset({"CreateContainerError", "RunContainerError"})
_BAD_COMMAND_RE = re.compile(
    r"executable file not found|no such file or directory|permission denied|no command specified",
    re.IGNORECASE,
)

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a run ended. ``error`` is None exactly when it succeeded."""

    error: AutoscorerError | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    image_id: str | None = None
    extra: Json = field(default_factory=dict)


def parse_time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def participant_status(pod: Json) -> Json:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER_NAME:
            return dict(status)
    return {}


def has_started(pod: Json | None) -> bool:
    state = participant_status(pod or {}).get("state") or {}
    return "running" in state or "terminated" in state


def image_pull_error(waiting: Json) -> AutoscorerError:
    message = str(waiting.get("message") or waiting.get("reason"))
    not_found = _NOT_FOUND_RE.search(message) is not None
    code = ErrorCode.IMAGE_NOT_FOUND if not_found else ErrorCode.IMAGE_PULL_FAILED
    return execution_error(code, f"cannot pull the image: {message}", reason=waiting.get("reason"))


def classify_waiting(waiting: Json) -> Verdict | None:
    reason = waiting.get("reason")
    if reason in PULL_REASONS:
        return Verdict(error=image_pull_error(waiting))
    if reason == "InvalidImageName":
        return Verdict(
            error=execution_error(
                ErrorCode.IMAGE_NOT_FOUND, f"invalid image name: {waiting.get('message')}"
            )
        )
    if reason == "ErrImageNeverPull":
        return Verdict(
            error=execution_error(
                ErrorCode.IMAGE_NOT_PRESENT, f"image not on the node: {waiting.get('message')}"
            )
        )
    if reason in _START_REASONS and _BAD_COMMAND_RE.search(str(waiting.get("message") or "")):
        return Verdict(
            error=execution_error(  # the participant's command: no retry can help
                ErrorCode.CONTAINER_FAILED, f"the program could not start: {waiting.get('message')}"
            )
        )
    if reason == "CreateContainerConfigError":
        return Verdict(
            error=execution_error(
                ErrorCode.CONTAINER_CREATE_FAILED,
                f"bad pod configuration: {waiting.get('message')}",
            )
        )
    return None


def terminated_error(terminated: Json) -> AutoscorerError | None:
    code, reason = terminated.get("exitCode"), terminated.get("reason")
    if reason == "OOMKilled":
        return execution_error(
            ErrorCode.CONTAINER_OOM, "the program exceeded its memory limit", exit_code=code
        )
    if code == 0:
        return None
    if reason in {"StartError", "ContainerCannotRun"}:
        return execution_error(
            ErrorCode.CONTAINER_FAILED,
            f"the container could not start: {terminated.get('message')}",
            exit_code=code,
        )
    error = execution_error(
        ErrorCode.CONTAINER_EXIT_NONZERO,
        f"the program exited with code {code}",
        exit_code=code,
        reason=reason,
    )
    error.logs = terminated.get("message") or None
    return error


def classify_terminated(terminated: Json, image_id: str | None) -> Verdict:
    error = terminated_error(terminated)
    return Verdict(
        error=error,
        exit_code=terminated.get("exitCode"),
        oom_killed=terminated.get("reason") == "OOMKilled",
        started_at=parse_time(terminated.get("startedAt")),
        finished_at=parse_time(terminated.get("finishedAt")),
        image_id=image_id or None,
    )


def classify_failed_pod(pod: Json) -> Verdict:
    status = pod.get("status", {})
    reason, message = status.get("reason"), str(status.get("message") or "")
    if reason == "DeadlineExceeded":
        error = execution_error(ErrorCode.TIMEOUT_ERROR, "the pod ran past its deadline")
        return Verdict(error=error, timed_out=True)
    if reason == "Evicted" and "exceeds the limit" in message:
        return Verdict(
            error=execution_error(
                ErrorCode.CONTAINER_FAILED, f"evicted for using too much disk: {message}"
            )
        )
    return Verdict(
        error=execution_error(
            ErrorCode.EXEC_ERROR,
            f"the pod failed without a container exit: {reason}: {message}",
            reason=reason,
        )
    )


def classify_pod(pod: Json) -> Verdict | None:
    """The verdict a pod's status already implies, or None while it may still run."""
    container = participant_status(pod)
    state = container.get("state") or {}
    if "terminated" in state:
        return classify_terminated(state["terminated"], container.get("imageID"))
    if "waiting" in state:
        verdict = classify_waiting(state["waiting"])
        if verdict is not None:
            return verdict
    if pod.get("status", {}).get("phase") == "Failed":
        return classify_failed_pod(pod)
    return None


def job_hit_deadline(job: Json) -> bool:
    """True once the Job controller decided (or finished deciding) the deadline was exceeded."""
    for condition in job.get("status", {}).get("conditions") or []:
        if (
            condition.get("type") in {"Failed", "FailureTarget"}
            and condition.get("status") == "True"
            and condition.get("reason") == "DeadlineExceeded"
        ):
            return True
    return False


def killed_at_deadline(verdict: Verdict, time_limit: int) -> bool:
    """A SIGKILL/SIGTERM exit after the whole time limit: the deadline kill, seen before the Job."""
    if verdict.exit_code not in _KILLED_BY_SIGNAL or verdict.oom_killed:
        return False
    if verdict.started_at is None or verdict.finished_at is None:
        return False
    return (verdict.finished_at - verdict.started_at).total_seconds() >= time_limit


def timeout_verdict(last_pod: Json | None, time_limit: int) -> Verdict:
    """The deadline passed: the participant's fault only if its program ever started."""
    if not has_started(last_pod):
        return Verdict(
            error=execution_error(
                ErrorCode.RESOURCE_ERROR,
                f"the pod did not start within the time limit ({time_limit}s): "
                "no node could run it",
                time_limit=time_limit,
            )
        )
    base = classify_pod(last_pod or {}) or Verdict()
    error = execution_error(
        ErrorCode.TIMEOUT_ERROR,
        f"the program ran past its time limit ({time_limit}s)",
        time_limit=time_limit,
    )
    return Verdict(
        error=error,
        exit_code=base.exit_code,
        timed_out=True,
        started_at=base.started_at,
        finished_at=base.finished_at,
        image_id=base.image_id,
    )
