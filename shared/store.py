"""The ``JobStore`` seam: where jobs live, and the rules every implementation keeps.

Two implementations keep the same contract (``tests/shared/test_store_contract.py`` runs against
both): MongoDB or FerretDB through PyMongo's ``AsyncMongoClient`` (:mod:`shared.store_mongo`), and
an embedded SQLite file (:mod:`shared.store_sqlite`). Every write touches one document atomically;
see ``docs/STORE.md`` for the rules.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.errors import AutoscorerError, ErrorCode, ErrorInfo, Stage
from shared.jobs import (
    PROCESSED_EVENTS_KEPT,
    AttemptRecord,
    Attempts,
    Job,
    JobStatus,
    Lease,
    OutboxEntry,
    StatusChange,
    check_transition,
)
from shared.models import Result, RunOutcome
from shared.store_queue import BackendQueue

MAX_PAGE = 500

CLAIM_GRACE = timedelta(seconds=60)
"""How long a workspace claim stands while its job is missing or finished before it was claimed:
the claimer is between claiming and creating the job, or about to re-score it."""


class JobNotFoundError(AutoscorerError):
    """An operation that needs an existing job named one the store does not hold."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            ErrorCode.INTERNAL_ERROR,
            f"no job {job_id!r} in the store",
            stage=Stage.PLATFORM,
            details={"job_id": job_id},
        )


def store_error(exc: BaseException, operation: str) -> AutoscorerError:
    """The one error a store raises when its database fails (retryable, platform's fault)."""
    return AutoscorerError(
        ErrorCode.STORE_ERROR,
        f"job store {operation} failed: {type(exc).__name__}: {exc}",
        stage=Stage.PLATFORM,
        details={"operation": operation, "exception": type(exc).__name__},
    )


class TransitionOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE_EVENT = "duplicate_event"  # the event id was already processed: nothing changed
    STATE_MISMATCH = "state_mismatch"  # the job was not in any of from_states: nothing changed


@dataclass(frozen=True, slots=True)
class Transition:
    outcome: TransitionOutcome
    job: Job  # after the change when applied, else as it is now

    @property
    def applied(self) -> bool:
        return self.outcome is TransitionOutcome.APPLIED


@dataclass(frozen=True, slots=True)
class Step:
    """A state a transition passes through on its way: its own history entry and processed
    event id, in the same single-document update (a platform's run of a score-only job goes
    ``queued -> running -> scoring`` in one round trip)."""

    status: JobStatus
    event_id: str | None = None
    reason: str | None = None


def check_moves(
    states: frozenset[JobStatus], to_state: JobStatus, through: Step | None = None
) -> None:
    """Raise :class:`~shared.jobs.IllegalTransitionError` unless every move is allowed."""
    if through is None:
        check_transition(states, to_state)
        return
    check_transition(states, through.status)
    check_transition(frozenset({through.status}), to_state)


def check_pop(outbox: Sequence[OutboxEntry], pop: Sequence[OutboxEntry]) -> None:
    """A transition either adds outbox entries or pops published ones, never both: MongoDB
    cannot push to and pull from one array in one update."""
    if outbox and pop:
        raise ValueError("a transition cannot both add outbox entries and pop published ones")


def passed_change(through: Step | None, change: StatusChange) -> StatusChange | None:
    """The history entry of ``through``, at the moment of ``change``."""
    if through is None:
        return None
    return StatusChange(
        status=through.status, at=change.at, reason=through.reason, event_id=through.event_id
    )


@dataclass(frozen=True, slots=True)
class Created:
    job: Job
    created: bool  # False: a job with this idempotency key (or job id) already existed


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None  # pass back as ListQuery.cursor; None on the last page


class JobUpdate(BaseModel):
    """Fields a transition writes besides the status. Only the fields given are written, so
    ``JobUpdate(lease=None)`` clears the lease while ``JobUpdate()`` changes nothing.

    ``attempt`` stores the record under its number (a new number appends, a known one replaces)
    and raises ``attempts.count`` to it; a number that skips ahead makes the transition a
    ``STATE_MISMATCH``.
    """

    model_config = ConfigDict(frozen=True)

    run_outcome: RunOutcome | None = None
    result: Result | None = None
    error: ErrorInfo | None = None
    lease: Lease | None = None
    trace_context: dict[str, str] = Field(default_factory=dict)
    priority: int = 0
    backend: str | None = None
    queued_at: datetime | None = None
    attempt: AttemptRecord | None = None
    deadline_at: datetime | None = None

    def fields(self) -> dict[str, Any]:
        """The plain fields given (all but ``attempt``), by name."""
        return {name: getattr(self, name) for name in self.model_fields_set if name != "attempt"}


class ListQuery(BaseModel):
    """Filters for ``JobStore.list_jobs``; newest first, ordered by (created_at, job_id)."""

    model_config = ConfigDict(frozen=True)

    status: frozenset[JobStatus] | None = None
    submitter: str | None = None
    scorer: str | None = None
    created_from: datetime | None = Field(None, description="inclusive")
    created_to: datetime | None = Field(None, description="exclusive")
    cursor: str | None = None
    limit: int = Field(50, ge=1, le=MAX_PAGE)

    @field_validator("cursor")
    @classmethod
    def _cursor(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)
        return value

    def position(self) -> tuple[datetime, str] | None:
        return decode_cursor(self.cursor) if self.cursor else None


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        at = datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"not a job list cursor: {cursor!r}") from exc
    if at.tzinfo is None or not isinstance(job_id, str):
        raise ValueError(f"not a job list cursor: {cursor!r}")
    return at, job_id


def page_of(jobs: list[Job], limit: int) -> JobPage:
    """A page from up to ``limit + 1`` jobs: the extra one only says another page exists."""
    if len(jobs) <= limit:
        return JobPage(jobs, None)
    return JobPage(jobs[:limit], encode_cursor(jobs[limit - 1]))


@dataclass(frozen=True, slots=True)
class WorkspaceClaim:
    """Which job holds a workspace (its one active job), since when."""

    workspace: str
    job_id: str
    claimed_at: datetime


def claim_is_stale(claim: WorkspaceClaim, holder: Job | None, now: datetime) -> bool:
    """May another job take ``claim`` over? Only when its job (``holder``, as read now) is not
    active: finished after it claimed (the release was lost), or missing or finished for longer
    than ``CLAIM_GRACE`` (a claimer that died before creating the job, or a re-score that never
    started). A missing or finished job claimed just now is about to be created or re-scored."""
    if holder is not None and holder.active:
        return False
    if now - claim.claimed_at >= CLAIM_GRACE:
        return True
    return holder is not None and holder.updated_at > claim.claimed_at


def state_set(states: JobStatus | Iterable[JobStatus]) -> frozenset[JobStatus]:
    if isinstance(states, JobStatus):
        return frozenset({states})
    return frozenset(states)


def lease_is_free(job: Job, owner: str, now: datetime) -> bool:
    return job.lease is None or job.lease.owner == owner or job.lease.expires_at <= now


def attempt_fits(job: Job, update: JobUpdate | None, if_attempts: int | None = None) -> bool:
    """An attempt record may replace a known attempt or add the next one, never skip ahead;
    with ``if_attempts`` the job must have made exactly that many attempts."""
    if if_attempts is not None and job.attempts.count != if_attempts:
        return False
    if update is None or update.attempt is None:
        return True
    return update.attempt.number <= job.attempts.count + 1


def apply_transition(
    job: Job,
    to_state: JobStatus,
    update: JobUpdate | None,
    *,
    change: StatusChange,
    outbox: Sequence[OutboxEntry],
    passed: StatusChange | None = None,
    pop: Sequence[OutboxEntry] = (),
) -> Job:
    """The job after a transition: what the Mongo update operators do, written as Python.

    The caller has already checked the precondition (state, event id, attempt number).
    """
    popped = {entry.event_id for entry in pop}
    steps = [change] if passed is None else [passed, change]
    changes = update.fields() if update else {}
    changes["status"] = to_state
    changes["updated_at"] = change.at
    changes["history"] = [*job.history, *steps]
    changes["outbox"] = [*(e for e in job.outbox if e.event_id not in popped), *outbox]
    event_ids = [step.event_id for step in steps if step.event_id is not None]
    if event_ids:
        kept = [*job.processed_event_ids, *event_ids]
        changes["processed_event_ids"] = kept[-PROCESSED_EVENTS_KEPT:]
    if update is not None and update.attempt is not None:
        changes["attempts"] = with_attempt(job.attempts, update.attempt)
    if update is not None and update.result is not None:  # every result is kept (a re-score's)
        changes["result_versions"] = [*job.result_versions, update.result]
    return job.model_copy(update=changes)


def with_attempt(attempts: Attempts, record: AttemptRecord) -> Attempts:
    """``attempts`` with ``record`` stored under its number (appended or replacing)."""
    records = list(attempts.records)
    if record.number <= len(records):
        records[record.number - 1] = record
    else:
        records.append(record)
    return Attempts(count=max(attempts.count, record.number), records=records)


class JobStore(Protocol):
    """Where jobs live. Every method is one atomic single-document operation (``list_jobs`` and
    the ``find_*`` queries read many) and is safe to repeat."""

    async def init(self) -> None:
        """Create tables/indexes; idempotent."""

    async def close(self) -> None: ...

    async def create(self, job: Job) -> Created:
        """Insert ``job``; if its idempotency key (or job id) is taken, return that job instead."""

    async def get(self, job_id: str) -> Job | None: ...

    async def list_jobs(self, query: ListQuery) -> JobPage: ...

    async def transition(
        self,
        job_id: str,
        from_states: JobStatus | Iterable[JobStatus],
        to_state: JobStatus,
        update: JobUpdate | None = None,
        *,
        event_id: str | None = None,
        reason: str | None = None,
        outbox: Sequence[OutboxEntry] = (),
        if_deadline: datetime | None = None,
        if_attempts: int | None = None,
        through: Step | None = None,
        pop: Sequence[OutboxEntry] = (),
    ) -> Transition:
        """Compare-and-set: move to ``to_state`` only if the job is in one of ``from_states`` and
        has not processed ``event_id`` (and, when ``if_deadline`` is given, its ``deadline_at`` is
        that: the reaper acts on the deadline it read, not on a later one; when ``if_attempts``
        is given, ``attempts.count`` is that: a handler that did not read the job first acts on
        the attempt its event names); write ``update``, a history entry and ``outbox`` with it.
        With ``through`` the job passes that state on the way (its event id must not have been
        processed either: else ``STATE_MISMATCH``). ``pop``: published entries (as stored)
        removed in the same update, the relay's pop riding on it (not with ``outbox``:
        ``ValueError``); one no longer pending is ignored. One round trip when applied: the job
        comes back from the update itself.

        Raises :class:`~shared.jobs.IllegalTransitionError` before touching the store if the state
        machine forbids any of the moves, :class:`JobNotFoundError` if there is no such job.
        """

    async def acquire_lease(
        self, job_id: str, owner: str, ttl: timedelta, *, now: datetime | None = None
    ) -> Job | None:
        """Take the lease of an active job if it is free, expired or already ``owner``'s;
        ``None`` if another owner holds it or the job is finished."""

    async def renew_lease(
        self, job_id: str, owner: str, ttl: timedelta, *, now: datetime | None = None
    ) -> Job | None:
        """Extend ``owner``'s lease; ``None`` if ``owner`` no longer holds it."""

    async def release_lease(self, job_id: str, owner: str) -> bool:
        """Drop ``owner``'s lease; False if ``owner`` did not hold it."""

    async def find_expired_leases(
        self, *, now: datetime | None = None, limit: int = 100
    ) -> list[Job]:
        """Active jobs whose lease has expired, oldest expiry first."""

    async def find_overdue(self, *, now: datetime | None = None, limit: int = 100) -> list[Job]:
        """Active jobs whose ``deadline_at`` has passed, earliest deadline first."""

    async def find_without_deadline(self, *, limit: int = 100) -> list[Job]:
        """Active jobs with no ``deadline_at`` (stored before jobs had deadlines), least
        recently updated first."""

    async def set_deadline(self, job_id: str, status: JobStatus, deadline_at: datetime) -> bool:
        """Give a job still in ``status`` and still without a deadline ``deadline_at``; False
        when it moved on or has one."""

    async def find_active_by_workspace(self, workspace: str) -> Job | None:
        """The active job (submitted..scoring) using ``workspace``, if any."""

    async def claim_workspace(
        self, workspace: str, job_id: str, *, now: datetime | None = None
    ) -> str:
        """Make ``job_id`` the one job admitted on ``workspace`` (its canonical path) unless
        another job holds it; returns the holder's job id, ``job_id`` itself when claimed.

        Atomic across processes: of any number of concurrent claims one wins. A claim whose job
        finished (its release lost) or never appeared is taken over by compare-and-set on the
        holder (:func:`claim_is_stale`); a claim by its own holder is refreshed (a re-score)."""

    async def release_workspace(self, workspace: str, job_id: str) -> bool:
        """Drop ``job_id``'s claim on ``workspace`` (its job finished); False if it held none."""

    async def append_outbox(self, job_id: str, entries: Sequence[OutboxEntry]) -> Job:
        """Add entries whose event id is not already pending."""

    async def pop_outbox(self, job_id: str, entries: Sequence[OutboxEntry]) -> Job:
        """Remove published entries (those the caller holds, as read or written: matched by
        event id); entries no longer pending are ignored. One round trip when the stored
        entries are the ones given."""

    async def find_pending_outbox(self, *, limit: int = 100, skip: Sequence[str] = ()) -> list[Job]:
        """Jobs with unpublished outbox entries, least recently updated first, leaving out the
        jobs named in ``skip`` (those a relay backs off, so they cannot fill every batch)."""

    async def count_queued_ahead(self, job: Job) -> int:
        """How many ``queued`` jobs on ``job.backend`` went into ``queued`` before ``job`` (its
        ``queued_at``; ties by job id): the executor queue's first-in first-out order. One
        indexed count."""

    async def recent_run_seconds(self, backend: str, *, limit: int = 50) -> list[float]:
        """How long the last runs on ``backend`` took: the last attempt of each of the ``limit``
        most recently updated jobs past ``running`` there (those with a finished run)."""

    async def queue_stats(self) -> list[BackendQueue]:
        """Per backend: queued and running jobs and the oldest queued job's ``created_at``."""
