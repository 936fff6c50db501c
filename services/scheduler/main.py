"""The scheduler's composition root: settings -> store and bus -> scheduler.

python -m services.scheduler.main    # settings from AUTOSCORER__* and AUTOSCORER_CONFIG
"""

from __future__ import annotations

import asyncio

from services.scheduler.context import Context
from services.scheduler.deadlines import Deadlines
from services.scheduler.routing import Router
from services.scheduler.service import Scheduler
from shared.bus import EventBus
from shared.config import Settings
from shared.connect import make_bus, make_store
from shared.metrics import Metrics
from shared.outbox import OutboxRelay
from shared.runtime import serve_service, service_main
from shared.store import JobStore

RELAY_SETTLE_S = 5.0
"""How long the sweep leaves a new outbox entry to the handler publishing it."""

RELAY_HOLD_S = 1.0
"""How long a published entry may wait for its job's next transition to pop it (one store
command fewer per hop); the sweep pops it after that. Held no longer than this plus one sweep
interval, which stays a second under ``RELAY_SETTLE_S`` (less hold, or none, when the sweep
interval is long), so another replica's sweep never publishes it again."""


def relay_hold(relay_interval_s: float) -> float:
    """``RELAY_HOLD_S``, shortened so that a held entry is popped a second before it settles."""
    return max(0.0, min(RELAY_HOLD_S, RELAY_SETTLE_S - relay_interval_s - 1.0))


def create_scheduler(
    settings: Settings, bus: EventBus, store: JobStore, metrics: Metrics | None = None
) -> Scheduler:
    """A scheduler on ``bus`` and ``store`` (opened by the caller). ``start()`` it before or
    after the bus starts; ``close()`` it before closing the bus. ``metrics`` counts finished
    jobs and the outbox backlog."""
    section = settings.scheduler
    relay = OutboxRelay(
        bus,
        store,
        batch=section.relay_batch,
        settle=RELAY_SETTLE_S,
        hold=relay_hold(section.relay_interval_s),
        metrics=metrics,
    )
    router = Router.from_settings(section)
    deadlines = Deadlines.from_settings(settings)
    ctx = Context(section, store, relay, router, deadlines, settings.limits, metrics)
    scheduler = Scheduler(ctx, bus)
    if metrics is not None:
        metrics.watch_loops(scheduler.supervisor)
    return scheduler


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (default: until SIGTERM/SIGINT)."""
    Router.from_settings(settings.scheduler)  # refuse a bad configuration before connecting
    metrics = Metrics()
    store = make_store(settings.store, metrics)
    bus = make_bus(settings.bus, metrics)
    scheduler = create_scheduler(settings, bus, store, metrics)
    banner = f"scheduler serving {settings.scheduler.queue}"
    port = settings.ops_http.scheduler_port
    await serve_service(
        scheduler, bus, settings, port, banner, metrics=metrics, stop=stop, store=store
    )


def main() -> None:
    service_main("scheduler", run)


if __name__ == "__main__":
    main()
