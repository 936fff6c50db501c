"""The outbox relay: publish the events a state change wrote into the job, then pop them.

Handlers call :meth:`OutboxRelay.flush` right after a transition that wrote entries (the fast
path); :meth:`OutboxRelay.sweep` runs periodically and at start-up for whatever is left (a crash
between the store write and the publish, a broker outage), highest job priority first. An entry
is popped only after the broker confirmed it, so a crash in between publishes it twice with the
same ``event_id``; consumers dedupe. Entries of every writer in the store are relayed, not only
the scheduler's. A sweep publishes each entry in the job's trace (``Job.trace_context``); a
flush inside a handler, under the handler's span.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from services.scheduler.outbox import event_of
from shared.bus import EventBus
from shared.errors import AutoscorerError, ErrorCode
from shared.jobs import Job, OutboxEntry, now_ms
from shared.store import JobStore
from shared.telemetry import continue_trace

log = logging.getLogger(__name__)

NOTIFICATIONS = frozenset({"job.failed", "job.cancelled", "score.completed"})
"""Events that only inform: when no queue is bound to them nobody is listening, so an unroutable
one is dropped. Work requests (``run.requested.*``, ``score.requested``) stay until a consumer
binds its queue."""


class OutboxRelay:
    def __init__(
        self, bus: EventBus, store: JobStore, *, batch: int = 100, settle: float = 1.0
    ) -> None:
        self._bus = bus
        self._store = store
        self._batch = batch
        self._settle = timedelta(seconds=settle)

    async def flush(self, job: Job) -> int:
        """Publish ``job``'s pending entries in order and pop the published ones."""
        return await self._relay(job, job.outbox)

    async def sweep(self, *, everything: bool = False) -> int:
        """Relay what is pending in the store. Entries younger than ``settle`` seconds are left
        to the handler that wrote them, unless ``everything`` (at start-up)."""
        jobs = await self._store.find_pending_outbox(limit=self._batch)
        cutoff = now_ms() - self._settle
        published = 0
        for job in sorted(jobs, key=lambda j: (-j.priority, j.updated_at)):
            entries = [e for e in job.outbox if everything or e.created_at <= cutoff]
            published += await self._relay(job, entries)
        return published

    async def _relay(self, job: Job, entries: Sequence[OutboxEntry]) -> int:
        done: list[str] = []
        for entry in entries:
            if not await self._publish(job, entry):
                break
            done.append(entry.event_id)
        if done:
            await self._store.pop_outbox(job.job_id, done)
        return len(done)

    async def _publish(self, job: Job, entry: OutboxEntry) -> bool:
        """True when the entry may be popped: published, or dropped for good."""
        try:
            with continue_trace(job.trace_context):
                await self._bus.publish(event_of(entry))
        except AutoscorerError as exc:
            return _gives_up(job, entry, exc)
        return True


def _gives_up(job: Job, entry: OutboxEntry, exc: AutoscorerError) -> bool:
    if exc.code is ErrorCode.BAD_FORMAT:
        log.error("dropping outbox entry %s of job %s: %s", entry.event_id, job.job_id, exc)
        return True
    if exc.details.get("reason") == "unroutable" and entry.type in NOTIFICATIONS:
        log.info("nobody listens to %s; dropping it for job %s", entry.type, job.job_id)
        return True
    log.warning("outbox entry %s of job %s not published: %s", entry.event_id, job.job_id, exc)
    return False
