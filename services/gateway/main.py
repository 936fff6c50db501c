"""The gateway's composition root: settings -> store, webhook store, bus -> app + dispatcher.

Every background loop of the gateway (the webhook dispatcher, the scorer watcher and its
announcer) runs under its ``Supervisor`` (``GatewayService.supervisor``, the app's too), which
/readyz reports.

python -m services.gateway.main        # settings from AUTOSCORER__* / AUTOSCORER_CONFIG
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from aiohttp import web

from services.gateway.app import create_app
from services.gateway.webhooks.dispatcher import SUBSCRIBED_EVENTS, WebhookDispatcher
from services.gateway.webhooks.store import WebhookStore
from services.gateway.webhooks.store_mongo import MongoWebhookStore
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from shared.bus import EventBus, Subscription
from shared.config import Settings, StoreSettings
from shared.connect import make_bus, make_store, start_bus
from shared.metrics import Metrics
from shared.retention import RetentionReaper
from shared.runtime import service_main, stop_on_signals
from shared.scoring import ScorerInfo
from shared.store import JobStore
from shared.supervise import Supervisor

log = logging.getLogger(__name__)


def make_webhook_store(settings: StoreSettings) -> WebhookStore:
    if settings.kind == "mongo":
        return MongoWebhookStore.from_url(settings.url.get_secret_value(), settings.database)
    return SqliteWebhookStore(settings.sqlite_path.with_name("webhooks.sqlite3"))


@dataclass
class GatewayService:
    app: web.Application
    dispatcher: WebhookDispatcher
    supervisor: Supervisor = field(default_factory=lambda: Supervisor("gateway"))
    reaper: RetentionReaper | None = None
    """removes expired uploads and finished workspaces (``gateway.retention``)"""

    def start(self) -> None:
        """Start the background loops (after the bus started)."""
        self.dispatcher.supervise(self.supervisor)
        if self.reaper is not None:
            self.reaper.supervise(self.supervisor)

    async def close(self) -> None:
        await self.supervisor.close()


async def create_gateway(
    settings: Settings,
    store: JobStore,
    bus: EventBus,
    hooks: WebhookStore,
    metrics: Metrics | None = None,
    *,
    scorers: Iterable[ScorerInfo] = (),
) -> GatewayService:
    """The app (refusing jobs beyond ``settings.limits`` at submission) and the webhook
    dispatcher; subscribes the dispatcher before the bus starts. The app's GET /metrics
    exports ``metrics`` (default: a registry of its own). The gateway learns its scorers from
    the scorer service's announcements; ``scorers`` seed its catalogue until then."""
    metrics = metrics or Metrics()
    supervisor = Supervisor("gateway")
    app = create_app(
        settings.gateway,
        store,
        bus,
        scorers,
        hooks,
        limits=settings.limits,
        supervisor=supervisor,
        scorer_time_limit=settings.scorer.time_limit,
        metrics=metrics,
    )
    secret = settings.gateway.webhooks.callback_secret
    dispatcher = WebhookDispatcher(
        hooks,
        store,
        settings.gateway.webhooks,
        callback_secret=secret.get_secret_value() if secret else None,
        metrics=metrics,
    )
    await bus.subscribe(
        Subscription(settings.gateway.webhook_queue, SUBSCRIBED_EVENTS, dispatcher.on_event)
    )
    reaper = RetentionReaper(
        settings.gateway.data_root,
        settings.gateway.retention,
        store,
        gauge=metrics.data_root_bytes,
    )
    return GatewayService(app, dispatcher, supervisor, reaper)


async def serve_app(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("gateway listening on http://%s:%d", host, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def open_parts(
    settings: Settings, metrics: Metrics, stack: AsyncExitStack
) -> tuple[JobStore, WebhookStore, EventBus]:
    """The job store and webhook store (opened, closed by ``stack``) and the bus (not started)."""
    store, hooks = make_store(settings.store, metrics), make_webhook_store(settings.store)
    for part in (store, hooks):
        await part.init()
        stack.push_async_callback(part.close)
    return store, hooks, make_bus(settings.bus, metrics)


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or stop_on_signals()
    async with AsyncExitStack() as stack:
        metrics = Metrics()
        store, hooks, bus = await open_parts(settings, metrics, stack)
        service = await create_gateway(settings, store, bus, hooks, metrics)
        await start_bus(bus, settings.bus.start_within_s)
        stack.push_async_callback(bus.close)
        service.start()
        stack.push_async_callback(service.close)
        await serve_app(service.app, settings.gateway.host, settings.gateway.port, stop)


def main() -> None:
    service_main("gateway", run)


if __name__ == "__main__":
    main()
