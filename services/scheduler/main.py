"""The scheduler's composition root: settings -> store and bus -> scheduler.

python -m services.scheduler.main        # settings from AUTOSCORER__* / AUTOSCORER_CONFIG
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from services.scheduler.context import Context
from services.scheduler.relay import OutboxRelay
from services.scheduler.routing import Router
from services.scheduler.service import Scheduler
from shared.bus import EventBus
from shared.bus_memory import MemoryBus
from shared.bus_rabbitmq import RabbitBus, RabbitBusConfig
from shared.config import BusSettings, Settings, StoreSettings, load_settings
from shared.store import JobStore
from shared.store_mongo import MongoJobStore
from shared.store_sqlite import SqliteJobStore
from shared.telemetry import setup_tracing, shutdown_tracing

RELAY_SETTLE_S = 5.0
"""How long the sweep leaves a new outbox entry to the handler publishing it."""


def create_scheduler(settings: Settings, bus: EventBus, store: JobStore) -> Scheduler:
    """A scheduler on ``bus`` and ``store`` (both opened by the caller). Call ``start()`` once
    the bus is started, ``close()`` before closing the bus."""
    section = settings.scheduler
    relay = OutboxRelay(bus, store, batch=section.relay_batch, settle=RELAY_SETTLE_S)
    ctx = Context(section, store, relay, Router.from_settings(section))
    return Scheduler(ctx, bus)


def open_bus(settings: BusSettings) -> EventBus:
    if settings.kind == "memory":
        return MemoryBus()
    config = RabbitBusConfig(url=settings.url.get_secret_value(), exchange=settings.exchange)
    return RabbitBus(config)


def open_store(settings: StoreSettings) -> JobStore:
    if settings.kind == "sqlite":
        return SqliteJobStore(settings.sqlite_path)
    return MongoJobStore.from_url(settings.url.get_secret_value(), settings.database)


async def run(settings: Settings) -> None:
    """Serve until cancelled."""
    Router.from_settings(settings.scheduler)  # refuse a bad configuration before connecting
    store = open_store(settings.store)
    bus = open_bus(settings.bus)
    scheduler = create_scheduler(settings, bus, store)
    try:
        await store.init()
        await bus.start()
        await scheduler.start()
        await asyncio.Event().wait()
    finally:
        await scheduler.close()
        await bus.close()
        await store.close()


def main() -> None:
    config = os.environ.get("AUTOSCORER_CONFIG")
    settings = load_settings(Path(config) if config else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    provider = setup_tracing(settings.otel, "scheduler")
    try:
        asyncio.run(run(settings))
    finally:
        shutdown_tracing(provider)


if __name__ == "__main__":
    main()
