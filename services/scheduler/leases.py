"""The lease monitor: a ``running`` job whose executor stopped heartbeating is re-queued.

The executor instance is presumed lost (a platform failure, never the participant's): the job
goes back to ``queued`` with the next ``RunRequested``, or fails with ``EXEC_ERROR`` once
``max_attempts`` runs were made. The move is the end of the attempt (``context.end_key``), so two
scheduler replicas expiring the same lease, or an expiry racing the run's ``RunCompleted``, move
the job once.

A lease is judged only while the scheduler's bus has been up for a whole lease length
(:class:`BusWatch`): while the broker is away no heartbeat can arrive, so an expiry then would
re-queue (and a newer attempt would stop) a run that is going well on its executor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from services.scheduler.context import Context
from services.scheduler.retries import retry_or_fail
from shared.bus import EventBus
from shared.errors import ErrorCode, execution_error
from shared.jobs import Job, JobStatus
from shared.logctx import job_context
from shared.supervise import guarded

log = logging.getLogger(__name__)


class BusWatch:
    """Whether the bus has been up long enough for missing heartbeats to mean something.

    Sampled at each lease check: after the bus was last seen down, leases wait ``settle_s``
    (a lease length: the executors' next heartbeats renew theirs in that time)."""

    def __init__(
        self, bus: EventBus, settle_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._bus, self._settle, self._clock = bus, settle_s, clock
        self._down_at: float | None = None

    def settled(self) -> bool:
        now = self._clock()
        if not self._bus.ready():
            self._down_at = now
            return False
        return self._down_at is None or now - self._down_at >= self._settle


async def expire_leases(ctx: Context, watch: BusWatch | None = None, *, limit: int = 100) -> int:
    """Handle every expired lease the store reports now; returns how many jobs moved. Nothing
    expires while ``watch`` says the bus has not been up a whole lease."""
    if watch is not None and not watch.settled():
        log.info("lease monitor: the bus was away within a lease length; no lease expires now")
        return 0
    moved = 0
    for job in await ctx.store.find_expired_leases(limit=limit):
        with job_context(job.job_id, job.attempts.count or None):
            moved += await _expire_guarded(ctx, job)
    return moved


async def _expire_guarded(ctx: Context, job: Job) -> int:
    """One job of a round, its own item: whatever it raises is logged, the round goes on."""
    moved: list[int] = []

    async def work() -> None:
        if job.status is JobStatus.RUNNING:
            moved.append(await _expire(ctx, job))
        elif job.lease is not None:  # a stale lease on a job past running: just let it go
            await ctx.store.release_lease(job.job_id, job.lease.owner)

    await guarded(f"lease monitor: job {job.job_id}", work)
    return sum(moved)


async def _expire(ctx: Context, job: Job) -> int:
    lease = job.lease
    owner = lease.owner if lease else "?"
    error = execution_error(
        ErrorCode.EXEC_ERROR,
        f"executor {owner} stopped heartbeating; its lease expired",
        executor=owner,
        expired_at=lease.expires_at.isoformat() if lease else None,
    ).to_info()
    log.warning("job %s attempt %d: %s", job.job_id, job.attempts.count, error.message)
    done = await retry_or_fail(ctx, job, error)
    return int(done.applied)
