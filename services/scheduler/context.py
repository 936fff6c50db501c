"""What every scheduler step needs, and the one way steps change a job.

:meth:`Context.move` is a compare-and-set on the job that writes the events it causes into the
job's outbox in the same update, then hands them to the relay. The relay holds what it published
for an active job (the job moves again soon) and the next move that emits nothing pops it in its
own update: the pop rides on the transition that follows it (``shared.outbox``). A delivery
seen twice finds its event id already processed (``DUPLICATE_EVENT``) or the job in another
state (``STATE_MISMATCH``) and changes nothing.

The start and the end of run attempt *n* are recorded under keys naming the job and the attempt
(:func:`start_key`, :func:`end_key`) instead of the id of the event that caused them: whichever
event comes first (``RunStarted`` or an early ``RunCompleted``; a ``RunCompleted``, a second one
from a duplicated run, or the lease monitor) moves the job, and every later one is a duplicate,
even when it decided on a job it read before that move.

Every event the scheduler emits has an id derived from its cause (:func:`attempt_cause`,
:func:`scoring_cause`, the job for ``JobCancelled``), never a random one: deciding the same step
again (two replicas, a redelivery, the reaper sending a request again) yields the same event,
which consumers drop as a duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.scheduler.deadlines import Deadlines
from services.scheduler.routing import Router
from shared.config import SchedulerSettings
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import BaseEvent
from shared.joblog import arecord
from shared.jobs import Job, JobStatus
from shared.limits import SandboxLimits
from shared.logctx import job_context
from shared.metrics import Metrics
from shared.outbox import OutboxRelay, outbox_entry
from shared.store import JobNotFoundError, JobStore, JobUpdate, Step, Transition
from shared.telemetry import continue_trace

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Context:
    settings: SchedulerSettings
    store: JobStore
    relay: OutboxRelay
    router: Router
    deadlines: Deadlines = field(default_factory=Deadlines)
    caps: SandboxLimits = field(default_factory=SandboxLimits)
    metrics: Metrics | None = None  # counts jobs reaching a terminal state, and their times

    async def move(
        self,
        job: Job | str,
        from_states: JobStatus | Iterable[JobStatus],
        to_state: JobStatus,
        *,
        update: JobUpdate | None = None,
        event_id: str | None = None,
        reason: str | None = None,
        emit: Sequence[BaseEvent] = (),
        if_deadline: datetime | None = None,
        if_attempts: int | None = None,
        through: Step | None = None,
    ) -> Transition:
        """Move ``job`` by compare-and-set: as last read (the deadline of ``to_state`` comes
        from its spec), or only its id when the step did not read it (one round trip; the
        caller's ``update`` sets the deadline, and a job the store does not hold yet is a
        retryable :func:`not_ready`). When nothing changed, the ``Transition`` holds the job
        as it is."""
        if isinstance(job, Job):
            deadline = {"deadline_at": self.deadlines.of(to_state, job.spec)}
            update = (update or JobUpdate()).model_copy(update=deadline)
        job_id = job.job_id if isinstance(job, Job) else job
        popped = [] if emit else self.relay.take(job_id)  # a move that emits pops with those
        applied = False
        try:
            done = await self.store.transition(
                job_id,
                from_states,
                to_state,
                update,
                event_id=event_id,
                reason=reason,
                outbox=[outbox_entry(event) for event in emit],
                if_deadline=if_deadline,
                if_attempts=if_attempts,
                through=through,
                pop=popped,
            )
            applied = done.applied
        except JobNotFoundError as exc:
            raise not_ready(job_id, "the store holds no such job yet") from exc
        finally:
            if not applied:
                self.relay.keep(job_id, popped)  # still published, not popped: the sweep pops them
        if done.applied:
            left = [entry for entry in popped if entry in done.job.outbox]  # stored otherwise
            self.relay.keep(job_id, left)
            before = before_move(done.job, 2 if through else 1)
            log_transition(before, done.job, reason)
            if not done.job.active:
                if self.metrics is not None:
                    self.metrics.job_finished(done.job)
                await self.release_workspace(done.job)
            if emit:
                await self.relay.flush(done.job, emit, hold=done.job.active)
            await journal_transition(before, done.job, reason)
        else:
            log.debug("job %s not moved to %s: %s", job_id, to_state.value, done.outcome.value)
        return done

    async def release_workspace(self, job: Job) -> None:
        """Let the next job have a finished job's workspace. Best effort: a claim whose job
        finished is taken over anyway (``shared.store.claim_is_stale``)."""
        try:
            await self.store.release_workspace(job.workspace, job.job_id)
        except AutoscorerError as exc:
            log.warning("job %s: workspace claim not released (%s)", job.job_id, exc.message)

    async def known_job(self, job_id: str) -> Job:
        """The job, or a retryable error: its ``JobSubmitted`` may not have been handled yet."""
        job = await self.store.get(job_id)
        if job is None:
            raise not_ready(job_id, "the store holds no such job yet")
        return job


def before_move(after: Job, steps: int = 1) -> Job:
    """The job as it was before its last transition (of ``steps`` history entries), as far as
    the log and the journal need it (status and history): a step that moved a job without
    reading it first has only ``after``."""
    if len(after.history) <= steps:
        return after
    earlier = after.history[:-steps]
    return after.model_copy(update={"status": earlier[-1].status, "history": earlier})


def log_transition(before: Job, after: Job, reason: str | None) -> None:
    """The one INFO line of a transition: ``job <id> <from> -> <to> [<error code>] (<reason>)``."""
    code = _code(after)
    with (
        job_context(after.job_id, after.attempts.count or None),
        continue_trace(after.trace_context),  # the reaper's and the relay's moves too
    ):
        log.info(
            "job %s %s -> %s%s%s",
            after.job_id,
            before.status.value,
            after.status.value,
            f" {code}" if code else "",
            f" ({reason})" if reason else "",
            extra={"error_code": code},
        )


async def journal_transition(before: Job, after: Job, reason: str | None) -> None:
    """The transition in the workspace's ``logs/job.jsonl`` when the workspace is a directory
    here (shared.joblog); written after the events went out, so it never delays them."""
    await arecord(
        after.workspace,
        "transition",
        after.job_id,
        attempt=after.attempts.count or None,
        service="scheduler",
        only_if_reachable=True,
        from_state=before.status.value,
        to_state=after.status.value,
        reason=reason,
        error_code=_code(after),
        in_state_s=_in_state_s(before, after),
        total_s=None if after.active else _since(after.created_at, after),
    )


def _code(job: Job) -> str | None:
    return job.error.code.value if job.error and not job.active else None


def _in_state_s(before: Job, after: Job) -> float | None:
    """Seconds the job spent in the state it left."""
    return _since(before.history[-1].at, after) if before.history else None


def _since(moment: datetime, after: Job) -> float | None:
    """Seconds from ``moment`` to ``after``'s last transition."""
    return round((after.history[-1].at - moment).total_seconds(), 3) if after.history else None


def attempt_cause(job: Job, attempt: int) -> str:
    """The cause of the events of run attempt ``attempt`` (its ``RunRequested``, the
    ``JobFailed`` it ends with): see :func:`shared.events.derived_event_id`."""
    return f"{job.key}/attempt-{attempt}"


def scoring_cause(job: Job, scoring_round: int) -> str:
    """The cause of the events of scoring round ``scoring_round`` (``ScoreRequested``, the
    ``JobFailed`` it ends with)."""
    return f"{job.key}/score-{scoring_round}"


def start_key(job_id: str, attempt: int) -> str:
    return f"{job_id}/attempt-{attempt}/start"


def end_key(job_id: str, attempt: int) -> str:
    return f"{job_id}/attempt-{attempt}/end"


def not_ready(job_id: str, why: str) -> AutoscorerError:
    """Retryable: an event overtook the one that prepares the job for it; the bus retries."""
    return AutoscorerError(
        ErrorCode.STORE_ERROR,
        f"job {job_id} is not ready for this event: {why}",
        stage=Stage.PLATFORM,
        details={"job_id": job_id, "reason": "not_ready"},
    )
