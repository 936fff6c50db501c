"""The scheduler: consumes job and run events from one queue, owns the job's state machine.

Every handler is idempotent (docs/SERVICES.md, "Exactly-once effects"). Failures are not caught
here: the bus is the boundary that retries retryable ``AutoscorerError`` s (store down, an event
that overtook the one it depends on) and dead-letters the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.scheduler.cancel import on_cancel_requested
from services.scheduler.context import Context
from services.scheduler.intake import on_job_submitted
from services.scheduler.leases import BusWatch, expire_leases
from services.scheduler.reaper import reap_overdue
from services.scheduler.refusals import on_invalid_body
from services.scheduler.runs import on_run_completed, on_run_heartbeat, on_run_started
from services.scheduler.scoring import on_score_completed, rescore
from shared.bus import EventBus, Subscription
from shared.config import SchedulerSettings
from shared.errors import AutoscorerError
from shared.events import (
    BaseEvent,
    CancelRequested,
    Event,
    JobSubmitted,
    RescoreRequested,
    RunCompleted,
    RunHeartbeat,
    RunStarted,
    ScoreCompleted,
)
from shared.store import Transition
from shared.supervise import Supervisor

log = logging.getLogger(__name__)


async def _on_rescore_requested(ctx: Context, event: RescoreRequested) -> None:
    await rescore(ctx, event.job_id, event_id=str(event.event_id), reason=event.reason)


HANDLERS: dict[type[BaseEvent], Callable[[Context, Any], Awaitable[object]]] = {
    JobSubmitted: on_job_submitted,
    RunStarted: on_run_started,
    RunHeartbeat: on_run_heartbeat,
    RunCompleted: on_run_completed,
    ScoreCompleted: on_score_completed,
    CancelRequested: on_cancel_requested,
    RescoreRequested: _on_rescore_requested,
}
"""What the scheduler handles: one handler per event type; its queue binds exactly these."""

ROUTING_KEYS = tuple(kind.model_fields["type"].default for kind in HANDLERS)
"""The routing keys of ``scheduler.jobs``: each handled event's ``type`` (none of them carries a
backend in its key)."""


class Scheduler:
    def __init__(self, ctx: Context, bus: EventBus) -> None:
        self._ctx = ctx
        self._bus = bus
        self.supervisor = Supervisor("scheduler")
        self._bus_watch = BusWatch(bus, ctx.settings.lease_ttl_s)
        """Runs the outbox relay, the lease monitor and the reaper; readiness reads its health."""

    @property
    def settings(self) -> SchedulerSettings:
        return self._ctx.settings

    async def start(self) -> None:
        """Subscribe to ``scheduler.jobs`` and start the relay, lease monitor and reaper.

        The relay's first sweep republishes everything a previous process left in outboxes.
        """
        s = self.settings
        await self._bus.subscribe(
            Subscription(
                s.queue,
                ROUTING_KEYS,
                self.handle,
                concurrency=s.concurrency,
                on_invalid=self.refused,
            )
        )
        relay = self._ctx.relay
        self.supervisor.every(
            "outbox relay",
            s.relay_interval_s,
            relay.sweep,
            first=lambda: relay.sweep(everything=True),
        )
        self.supervisor.every("lease monitor", s.lease_check_interval_s, self.expire_leases)
        self.supervisor.every("reaper", s.reaper_interval_s, self.reap_overdue)

    async def close(self) -> None:
        """Stop the loops, then pop what the relay published and held for the jobs' next
        moves, so a restart does not publish it again."""
        await self.supervisor.close()
        await self._ctx.relay.close()

    async def handle(self, event: Event) -> None:
        handler = HANDLERS.get(type(event))
        if handler is None:
            log.debug("scheduler ignores %s", event.type)
            return
        await handler(self._ctx, event)

    async def refused(self, body: bytes, error: AutoscorerError) -> None:
        """A body on ``scheduler.jobs`` that is no valid event: a refused ``JobSubmitted`` is
        answered with ``JobFailed`` before the bus dead-letters it."""
        await on_invalid_body(self._ctx, self._bus, body, error)

    async def request_rescore(self, job_id: str, *, reason: str | None = None) -> Transition:
        """Re-score a finished job (embedded mode; the gateway publishes ``RescoreRequested``)."""
        return await rescore(self._ctx, job_id, reason=reason)

    async def expire_leases(self) -> int:
        return await expire_leases(self._ctx, self._bus_watch)

    async def reap_overdue(self) -> int:
        """Move every job past its state's deadline on (``services/scheduler/reaper.py``)."""
        return await reap_overdue(self._ctx)
