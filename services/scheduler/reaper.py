"""The reaper: the owner of last resort of every active state (docs/SERVICES.md, "Deadlines").

Every move into an active state sets ``Job.deadline_at`` (:mod:`services.scheduler.deadlines`).
Every ``reaper_interval_s`` the reaper takes the jobs past it, each its own guarded item, and
moves each on by compare-and-set:

- ``submitted``: the scheduler admits (queues or refuses) it itself (its ``JobSubmitted`` was
  lost or is late);
- ``queued`` / ``scoring``: the request is sent again (``queued -> queued``, ``scoring ->
  scoring``: the same request, same event id) while ``deadline_resends`` allow, then the job fails
  with ``DEADLINE_EXCEEDED`` and ``JobFailed``; a score-only job waiting for a platform's
  ``RunCompleted`` has nothing to send and fails at once;
- ``running``: the attempt is lost, as when its lease expires: retried while attempts remain.

The move is recorded under a key naming the deadline it acts on and only applies while the job
still has that deadline (``if_deadline``), so two schedulers reaping the same job move it once, a
reaper acting on an old read cannot touch a later round of the job, and a result that lands
first (a late ``ScoreCompleted``) makes the reaper's compare-and-set a no-op; whichever lands
first is the job's one terminal state.

An active job stored before jobs had deadlines has none: each round first gives such jobs the
deadline of their state counted from their last update (:func:`give_deadlines`), so they are
reaped like any other.
"""

from __future__ import annotations

import functools
import logging

from services.scheduler.cancel import STAGE_OF
from services.scheduler.context import Context
from services.scheduler.intake import admit, run_request
from services.scheduler.retries import attempt_failed, retry_or_fail
from services.scheduler.scoring import score_request, scoring_failed
from shared.errors import AutoscorerError, ErrorCode, ErrorInfo, Stage
from shared.events import BaseEvent
from shared.jobs import Job, JobStatus
from shared.logctx import job_context
from shared.store import JobUpdate, Transition
from shared.supervise import guarded

log = logging.getLogger(__name__)


async def reap_overdue(ctx: Context, *, limit: int = 100) -> int:
    """Move every job the store reports past its deadline; returns how many moved."""
    await give_deadlines(ctx, limit=limit)
    moved = 0
    for job in await ctx.store.find_overdue(limit=limit):
        with job_context(job.job_id, job.attempts.count or None):
            moved += await _reap_guarded(ctx, job)
    return moved


async def give_deadlines(ctx: Context, *, limit: int = 100) -> int:
    """Give each active job without a deadline that of its state, from its last update; each
    job its own guarded item. Returns how many were handled."""
    given = 0
    for job in await ctx.store.find_without_deadline(limit=limit):
        work = functools.partial(_give_deadline, ctx, job)
        with job_context(job.job_id):
            given += await guarded(f"reaper: deadline of job {job.job_id}", work)
    return given


async def _give_deadline(ctx: Context, job: Job) -> None:
    deadline = ctx.deadlines.of(job.status, job.spec, now=job.updated_at)
    if deadline is not None:  # a compare-and-set: a job that moved meanwhile has its own
        await ctx.store.set_deadline(job.job_id, job.status, deadline)


async def _reap_guarded(ctx: Context, job: Job) -> bool:
    """One job of a round, its own item: whatever it raises is logged, the round goes on."""
    done: list[Transition] = []

    async def work() -> None:
        done.append(await reap(ctx, job))

    return await guarded(f"reaper: job {job.job_id}", work) and done[0].applied


async def reap(ctx: Context, job: Job) -> Transition:
    """Move one overdue ``job`` (as read) on; a no-op when it moved meanwhile."""
    log.warning(
        "job %s stayed %s past its deadline %s",
        job.job_id,
        job.status.value,
        job.deadline_at.isoformat() if job.deadline_at else "?",
    )
    match job.status:
        case JobStatus.SUBMITTED:
            return await admit(ctx, job, event_id=deadline_key(job))
        case JobStatus.RUNNING:
            return await retry_or_fail(ctx, job, deadline_error(job))
        case JobStatus.QUEUED if job.spec.container is not None:
            return await _resend_or_fail(ctx, job, run_request(ctx, job, attempt=_next(job)))
        case JobStatus.SCORING:
            return await _resend_or_fail(ctx, job, score_request(job, job.scoring_round()))
        case _:
            return await _fail(ctx, job)


async def _resend_or_fail(ctx: Context, job: Job, request: BaseEvent) -> Transition:
    if job.resent() >= ctx.deadlines.resends:
        return await _fail(ctx, job)
    pending = str(request.event_id) in {entry.event_id for entry in ctx.relay.unsent(job)}
    return await ctx.move(
        job,
        job.status,
        job.status,
        event_id=deadline_key(job),
        reason=f"deadline passed; {request.type} sent again ({job.resent() + 1})",
        emit=[] if pending else [request],  # still in the outbox: the relay sends it
        if_deadline=job.deadline_at,
    )


async def _fail(ctx: Context, job: Job) -> Transition:
    error = deadline_error(job)
    if job.status is JobStatus.SCORING:
        failed = scoring_failed(job, error)
    else:
        failed = attempt_failed(job, error, _next(job))
    return await ctx.move(
        job,
        job.status,
        JobStatus.FAILED,
        update=JobUpdate(error=error, lease=None),
        event_id=deadline_key(job),
        reason=f"{job.status.value} past its deadline: {error.code.value}",
        emit=[failed],
        if_deadline=job.deadline_at,
    )


def deadline_error(job: Job) -> ErrorInfo:
    deadline = job.deadline_at.isoformat() if job.deadline_at else None
    return AutoscorerError(
        ErrorCode.DEADLINE_EXCEEDED,
        f"the job stayed {job.status.value} past its deadline ({deadline}); "
        f"its request was sent {job.resent() + 1} time(s)",
        stage=STAGE_OF.get(job.status, Stage.PLATFORM),
        details={"state": job.status.value, "deadline_at": deadline, "resent": job.resent()},
    ).to_info()


def deadline_key(job: Job) -> str:
    """The processed-event key of the reaper's move: one move per deadline, whoever reaps."""
    deadline = job.deadline_at.isoformat() if job.deadline_at else "none"
    return f"{job.job_id}/deadline/{job.status.value}/{deadline}"


def _next(job: Job) -> int:
    return job.attempts.count + 1
