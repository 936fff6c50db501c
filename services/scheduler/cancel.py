"""``CancelRequested``: any active job moves to ``cancelled`` and ``JobCancelled`` goes out.

Executor services holding the job stop it when they see ``JobCancelled``; a ``RunCompleted``
that arrives afterwards finds the job cancelled and changes nothing.
"""

from __future__ import annotations

import logging

from services.scheduler.context import Context, not_ready
from shared.errors import Stage
from shared.events import CancelRequested, JobCancelled, derived_event_id
from shared.jobs import JobStatus
from shared.store import JobUpdate, TransitionOutcome

log = logging.getLogger(__name__)

STAGE_OF: dict[JobStatus, Stage] = {
    JobStatus.SUBMITTED: Stage.VALIDATION,
    JobStatus.QUEUED: Stage.EXECUTION,
    JobStatus.RUNNING: Stage.EXECUTION,
    JobStatus.SCORING: Stage.SCORING,
}
_TRIES = 3


async def on_cancel_requested(ctx: Context, event: CancelRequested) -> None:
    """Cancel from the state the job is in, re-reading it if it moved in between."""
    for _ in range(_TRIES):
        job = await ctx.known_job(event.job_id)
        if not job.active:
            log.info("job %s is already %s; nothing to cancel", job.job_id, job.status.value)
            return
        cancelled = JobCancelled(
            event_id=derived_event_id(job.key, "job.cancelled"),  # a job is cancelled once
            job_id=job.job_id,
            reason=event.reason,
            stage=STAGE_OF[job.status],
        )
        done = await ctx.move(
            job,
            job.status,
            JobStatus.CANCELLED,
            update=JobUpdate(lease=None),
            event_id=str(event.event_id),
            reason=f"cancelled by {event.requested_by}: {event.reason or 'no reason given'}",
            emit=[cancelled],
        )
        if done.outcome is not TransitionOutcome.STATE_MISMATCH:
            return
    raise not_ready(event.job_id, f"it changed state {_TRIES} times while being cancelled")
