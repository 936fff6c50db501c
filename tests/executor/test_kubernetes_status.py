"""How Pod and Job status JSON maps to verdicts and the standard error codes (pure functions).

The status documents are hand-written in the shape the Kubernetes API returns; no Kubernetes API
server runs here, so how closely a real kubelet's messages match them is not verified.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.executor.kubernetes.status import (
    Verdict,
    classify_pod,
    job_hit_deadline,
    killed_at_deadline,
    parse_time,
    timeout_verdict,
)
from shared.errors import ErrorCode


def pod(
    state: dict[str, Any] | None = None, phase: str = "Running", **status: Any
) -> dict[str, Any]:
    containers = [
        {
            "name": "participant",
            "image": "m:1",
            "imageID": "m@sha256:1",
            "ready": False,
            "restartCount": 0,
            "state": state or {},
        }
    ]
    return {
        "metadata": {"name": "p"},
        "status": {"phase": phase, "containerStatuses": containers, **status},
    }


def terminated(code: int, reason: str = "Error", **extra: Any) -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:01:00Z",
            **extra,
        }
    }


def code_of(verdict: Verdict | None) -> ErrorCode | None:
    assert verdict is not None
    return verdict.error.code if verdict.error else None


def test_running_and_creating_pods_have_no_verdict_yet() -> None:
    assert classify_pod(pod({"running": {"startedAt": "2026-01-01T00:00:00Z"}})) is None
    assert classify_pod(pod({"waiting": {"reason": "ContainerCreating"}}, "Pending")) is None
    assert classify_pod({"metadata": {}, "status": {"phase": "Pending"}}) is None


def test_exit_zero_succeeds_with_times_and_image_id() -> None:
    verdict = classify_pod(pod(terminated(0, "Completed"), "Succeeded"))
    assert verdict is not None
    assert verdict.error is None
    assert verdict.exit_code == 0
    assert verdict.image_id == "m@sha256:1"
    assert verdict.started_at is not None
    assert verdict.finished_at is not None
    assert (verdict.finished_at - verdict.started_at).total_seconds() == 60


@pytest.mark.parametrize(
    ("reason", "message", "code"),
    [
        ("ErrImagePull", "dial tcp 10.0.0.1:443: i/o timeout", ErrorCode.IMAGE_PULL_FAILED),
        ("ImagePullBackOff", 'Back-off pulling image "m:1"', ErrorCode.IMAGE_PULL_FAILED),
        (
            "ErrImagePull",
            "rpc error: code = NotFound desc = m:1: not found",
            ErrorCode.IMAGE_NOT_FOUND,
        ),
        ("ErrImagePull", "manifest unknown: manifest unknown", ErrorCode.IMAGE_NOT_FOUND),
        ("InvalidImageName", "couldn't parse image reference", ErrorCode.IMAGE_NOT_FOUND),
        (
            "ErrImageNeverPull",
            "image not present with pull policy Never",
            ErrorCode.IMAGE_NOT_PRESENT,
        ),
        ("CreateContainerConfigError", 'secret "x" not found', ErrorCode.CONTAINER_CREATE_FAILED),
    ],
)
def test_waiting_reasons(reason: str, message: str, code: ErrorCode) -> None:
    verdict = classify_pod(pod({"waiting": {"reason": reason, "message": message}}, "Pending"))
    assert code_of(verdict) is code


def test_oom_killed() -> None:
    verdict = classify_pod(pod(terminated(137, "OOMKilled"), "Failed"))
    assert code_of(verdict) is ErrorCode.CONTAINER_OOM
    assert verdict is not None
    assert verdict.oom_killed


def test_nonzero_exit_keeps_the_termination_message_as_logs() -> None:
    verdict = classify_pod(pod(terminated(2, message="Traceback\nValueError\n"), "Failed"))
    assert code_of(verdict) is ErrorCode.CONTAINER_EXIT_NONZERO
    assert verdict is not None
    assert verdict.error is not None
    assert verdict.error.logs == "Traceback\nValueError\n"
    assert verdict.error.details["exit_code"] == 2


def test_start_error_is_container_failed() -> None:
    state = terminated(128, "StartError", message="exec: no such file")
    verdict = classify_pod(pod(state, "Failed"))
    assert code_of(verdict) is ErrorCode.CONTAINER_FAILED


@pytest.mark.parametrize(
    ("reason", "message", "code"),
    [
        (
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
            ErrorCode.TIMEOUT_ERROR,
        ),
        (
            "Evicted",
            'Usage of EmptyDir volume "tmp" exceeds the limit "256Mi".',
            ErrorCode.CONTAINER_FAILED,
        ),
        ("Evicted", "The node was low on resource: memory.", ErrorCode.EXEC_ERROR),
    ],
)
def test_failed_pods_without_a_container_exit(reason: str, message: str, code: ErrorCode) -> None:
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    failed = pod(waiting, "Failed", reason=reason, message=message)
    assert code_of(classify_pod(failed)) is code


def test_job_deadline_conditions() -> None:
    def job(type_: str, reason: str) -> dict[str, Any]:
        return {"status": {"conditions": [{"type": type_, "status": "True", "reason": reason}]}}

    assert job_hit_deadline(job("Failed", "DeadlineExceeded"))
    assert job_hit_deadline(job("FailureTarget", "DeadlineExceeded"))
    assert not job_hit_deadline(job("Failed", "BackoffLimitExceeded"))
    assert not job_hit_deadline({"status": {}})


def test_a_signal_exit_after_the_whole_time_limit_is_the_deadline_kill() -> None:
    killed = classify_pod(pod(terminated(137), "Failed"))  # ran 60 s
    assert killed is not None
    assert killed_at_deadline(killed, time_limit=60)
    assert not killed_at_deadline(killed, time_limit=61)
    crashed = classify_pod(pod(terminated(1), "Failed"))
    assert crashed is not None
    assert not killed_at_deadline(crashed, time_limit=1)


def test_timeout_is_the_participants_only_if_the_program_started() -> None:
    started = timeout_verdict(pod({"running": {"startedAt": "2026-01-01T00:00:00Z"}}), 30)
    assert code_of(started) is ErrorCode.TIMEOUT_ERROR
    assert started.timed_out
    never = timeout_verdict(pod({"waiting": {"reason": "ContainerCreating"}}, "Pending"), 30)
    assert code_of(never) is ErrorCode.RESOURCE_ERROR
    assert code_of(timeout_verdict(None, 30)) is ErrorCode.RESOURCE_ERROR


def test_parse_time() -> None:
    parsed = parse_time("2026-01-01T00:00:05Z")
    assert parsed is not None
    assert parsed.second == 5
    assert parsed.utcoffset() is not None
    assert parse_time(None) is None
    assert parse_time("") is None
