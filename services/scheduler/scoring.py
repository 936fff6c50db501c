"""``ScoreCompleted`` finishes a job; a re-score sends a finished job back to the scorer."""

from __future__ import annotations

import logging

from services.scheduler.context import Context
from shared.events import JobFailed, ScoreCompleted, ScoreRequested
from shared.jobs import Job, JobStatus
from shared.store import JobUpdate, Transition, TransitionOutcome

log = logging.getLogger(__name__)

RESCORABLE = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED})


async def on_score_completed(ctx: Context, event: ScoreCompleted) -> None:
    """``scoring -> succeeded`` with the result, or ``-> failed`` when ``result.error``."""
    job = await ctx.known_job(event.job_id)
    if job.status is not JobStatus.SCORING:
        log.info("ignoring %s of job %s in %s", event.type, job.job_id, job.status.value)
        return
    error = event.result.error
    if error is None:
        await ctx.move(
            job.job_id,
            JobStatus.SCORING,
            JobStatus.SUCCEEDED,
            update=JobUpdate(result=event.result, error=None),
            event_id=str(event.event_id),
            reason=f"scored by {event.scorer} {event.scorer_version}",
        )
        return
    await ctx.move(
        job.job_id,
        JobStatus.SCORING,
        JobStatus.FAILED,
        update=JobUpdate(result=event.result, error=error),
        event_id=str(event.event_id),
        reason=f"scoring failed: {error.code.value}",
        emit=[JobFailed(job_id=job.job_id, error=error, attempt=job.attempts.count or None)],
    )


def rescorable(job: Job) -> bool:
    """Finished, and its run produced output: a job whose run failed has nothing to score."""
    ran = job.run_outcome is not None and job.run_outcome.status == "succeeded"
    return job.status in RESCORABLE and ran


async def rescore(
    ctx: Context, job_id: str, *, event_id: str | None = None, reason: str | None = None
) -> Transition:
    """``succeeded | failed -> scoring`` with a new ``ScoreRequested``; ``STATE_MISMATCH`` for a
    job that is still active, was cancelled, or never produced output."""
    job = await ctx.known_job(job_id)
    if not rescorable(job):
        return Transition(TransitionOutcome.STATE_MISMATCH, job)
    rounds = sum(1 for change in job.history if change.status is JobStatus.SCORING)
    request = ScoreRequested(
        job_id=job.job_id, spec=job.spec, workspace=job.workspace, attempt=rounds + 1
    )
    return await ctx.move(
        job.job_id,
        RESCORABLE,
        JobStatus.SCORING,
        update=JobUpdate(error=None),
        event_id=event_id,
        reason=f"re-score: {reason}" if reason else "re-score",
        emit=[request],
    )
