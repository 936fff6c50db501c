"""The job document: what the store keeps about one submission, and the state machine it follows.

One document holds everything about a job, outbox included, so that every change the platform makes
is a single-document update: neither FerretDB nor the embedded SQLite store needs transactions.

    submitted -> queued -> running -> scoring -> succeeded | failed | cancelled
                   ^          |          ^              |        |
                   +-- retry -+          +--- re-score -+--------+

Every active state has one owner and a deadline (``Job.deadline_at``, set by the move into it):
``submitted`` and the reaper belong to the scheduler, ``queued`` and ``running`` to an executor
(``running`` also under a lease), ``scoring`` to a scorer. A job still in a state past its deadline
is moved by the scheduler's reaper: its request sent again (``queued -> queued``,
``scoring -> scoring``, the same request with the same event id) or the job failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import AutoscorerError, ErrorCode, ErrorInfo, Stage
from shared.events import JobSubmitted
from shared.models import JobSpec, Result, RunOutcome

PROCESSED_EVENTS_KEPT = 100
"""How many processed event ids a job remembers; older redeliveries are still stopped by the
state precondition of the transition they would make."""


class JobStatus(StrEnum):
    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    SCORING = "scoring"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


_S = JobStatus

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    _S.SUBMITTED: frozenset({_S.QUEUED, _S.FAILED, _S.CANCELLED}),
    # queued -> queued, scoring -> scoring: the reaper sent the request again
    _S.QUEUED: frozenset({_S.QUEUED, _S.RUNNING, _S.FAILED, _S.CANCELLED}),
    # running -> queued is the retry after a platform failure
    _S.RUNNING: frozenset({_S.SCORING, _S.QUEUED, _S.FAILED, _S.CANCELLED}),
    _S.SCORING: frozenset({_S.SCORING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED}),
    # succeeded/failed -> scoring is a re-score of a finished run
    _S.SUCCEEDED: frozenset({_S.SCORING}),
    _S.FAILED: frozenset({_S.SCORING}),
    _S.CANCELLED: frozenset(),
}
"""Allowed transitions: ``TRANSITIONS[current]`` are the states ``current`` may move to."""

ACTIVE_STATES: frozenset[JobStatus] = frozenset({_S.SUBMITTED, _S.QUEUED, _S.RUNNING, _S.SCORING})
TERMINAL_STATES: frozenset[JobStatus] = frozenset(JobStatus) - ACTIVE_STATES

SUBMITTED_WAIT = timedelta(minutes=5)
"""The deadline of a new job in ``submitted`` unless its creator gives another: by then the
scheduler has queued it, or its reaper does."""


class IllegalTransitionError(AutoscorerError):
    """A caller asked for a move the state machine forbids: a bug in the caller, never retried."""

    def __init__(self, from_state: JobStatus, to_state: JobStatus) -> None:
        super().__init__(
            ErrorCode.INTERNAL_ERROR,
            f"illegal job transition {from_state.value} -> {to_state.value}",
            stage=Stage.PLATFORM,
            details={"from": from_state.value, "to": to_state.value},
        )


def can_transition(from_state: JobStatus, to_state: JobStatus) -> bool:
    return to_state in TRANSITIONS[from_state]


def check_transition(from_states: frozenset[JobStatus], to_state: JobStatus) -> None:
    """Raise :class:`IllegalTransitionError` unless all ``from_states`` may reach ``to_state``."""
    for state in sorted(from_states):
        if not can_transition(state, to_state):
            raise IllegalTransitionError(state, to_state)


def now_ms() -> datetime:
    """The current UTC time cut to milliseconds, the precision BSON dates keep."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class StatusChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: JobStatus
    at: datetime
    reason: str | None = None
    event_id: str | None = None


class AttemptRecord(BaseModel):
    """One try at running the participant's code."""

    number: int = Field(ge=1)
    backend: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome_code: str | None = Field(
        None, description="'succeeded', 'cancelled' or the ErrorCode the attempt ended with"
    )
    platform_failure: bool = False


class Attempts(BaseModel):
    count: int = Field(0, ge=0)
    records: list[AttemptRecord] = Field(default_factory=list)


class Lease(BaseModel):
    """Who is working on a running job, and until when; an expired lease may be taken over."""

    model_config = ConfigDict(frozen=True)

    owner: str = Field(min_length=1)
    expires_at: datetime


class OutboxEntry(BaseModel):
    """An event written with the state change that caused it, published later by a relay."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=now_ms)


class Job(BaseModel):
    """The stored job document."""

    job_id: str
    spec: JobSpec
    workspace: str = Field(description="where the job's workspace lives (a path or URI)")
    submitter: str = "anonymous"
    priority: int = 0
    backend: str | None = Field(
        None, description="the executor backend its run requests go to (set when it is queued)"
    )
    queued_at: datetime | None = Field(
        None, description="when it last went into queued: its run request's place in line"
    )
    status: JobStatus = JobStatus.SUBMITTED
    history: list[StatusChange] = Field(default_factory=list)
    attempts: Attempts = Field(default_factory=Attempts)
    run_outcome: RunOutcome | None = None
    result: Result | None = None
    result_versions: list[Result] = Field(
        default_factory=list,
        description="every result the job was given, oldest first (a re-score adds one; the "
        "last is ``result``): what a dispute compares",
    )
    error: ErrorInfo | None = None
    trace_context: dict[str, str] = Field(
        default_factory=dict, description="W3C trace context headers (traceparent, tracestate)"
    )
    idempotency_key: str | None = None
    callback_url: str | None = Field(None, description="told the final event of this job")
    request_digest: str | None = Field(
        None,
        description="sha256 of the submission that created the job: a request repeating its "
        "Idempotency-Key must match it",
    )
    lease: Lease | None = None
    deadline_at: datetime | None = Field(
        None, description="when the job's owner must have moved it on (active states only)"
    )
    created_at: datetime = Field(default_factory=now_ms)
    updated_at: datetime = Field(default_factory=now_ms)
    outbox: list[OutboxEntry] = Field(default_factory=list)
    processed_event_ids: list[str] = Field(default_factory=list)

    @property
    def scorer(self) -> str:
        return self.spec.scorer

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATES

    @property
    def key(self) -> str:
        """Names this job among every job ever stored under its id (a job id may be reused
        once its job is gone): the root of the causes its derived event ids come from."""
        return f"{self.job_id}@{self.created_at.isoformat()}"

    def scoring_round(self) -> int:
        """How many times the job went into ``scoring`` (re-scores count; re-sent requests,
        ``scoring -> scoring``, do not)."""
        rounds, before = 0, None
        for change in self.history:
            rounds += change.status is JobStatus.SCORING and before is not JobStatus.SCORING
            before = change.status
        return rounds

    def resent(self) -> int:
        """How often the reaper sent the current state's request again (trailing self-moves)."""
        statuses = [change.status for change in self.history]
        count = 0
        while count + 1 < len(statuses) and statuses[-count - 2] is statuses[-1]:
            count += 1
        return count


def with_expected_outputs(spec: JobSpec, expected_files: Iterable[str]) -> JobSpec:
    """Default the outputs a run must produce to the scorer's own ``output/`` files (its
    ``ScorerInfo.expected_files``): data on the spec, so an executor checks them knowing no
    scorer."""
    if spec.expected_outputs is not None:
        return spec
    expected = [f.removeprefix("output/") for f in expected_files if f.startswith("output/")]
    return spec.model_copy(update={"expected_outputs": expected})


def job_from_submitted(
    event: JobSubmitted,
    *,
    trace_context: dict[str, str] | None = None,
    outbox: list[OutboxEntry] | None = None,
    request_digest: str | None = None,
    submitted_wait: timedelta = SUBMITTED_WAIT,
) -> Job:
    """The job a ``JobSubmitted`` describes, in ``submitted``: the one mapping the gateway (which
    stores it with the event in its outbox) and the scheduler (for a platform's event) share."""
    job = new_job(
        event.spec,
        workspace=event.workspace,
        submitter=event.submitter,
        priority=event.priority,
        idempotency_key=event.idempotency_key,
        trace_context=trace_context,
        outbox=outbox,
        submitted_wait=submitted_wait,
    )
    job.callback_url = event.callback_url
    job.request_digest = request_digest
    return job


def new_job(
    spec: JobSpec,
    *,
    workspace: str,
    submitter: str = "anonymous",
    priority: int = 0,
    idempotency_key: str | None = None,
    trace_context: dict[str, str] | None = None,
    outbox: list[OutboxEntry] | None = None,
    submitted_wait: timedelta = SUBMITTED_WAIT,
) -> Job:
    """A fresh job in ``submitted`` with its first history entry, ready for ``JobStore.create``."""
    now = now_ms()
    return Job(
        job_id=spec.job_id,
        spec=spec,
        workspace=workspace,
        submitter=submitter,
        priority=priority,
        history=[StatusChange(status=JobStatus.SUBMITTED, at=now)],
        idempotency_key=idempotency_key,
        trace_context=trace_context or {},
        created_at=now,
        updated_at=now,
        deadline_at=now + submitted_wait,
        outbox=outbox or [],
    )
