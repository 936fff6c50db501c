"""Build the bus and the store named by the settings (called from each service's ``main()``).

Imports are local to each branch so the embedded mode never imports aio-pika or pymongo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from shared.bus import EventBus
from shared.config import BusSettings, StoreSettings
from shared.errors import AutoscorerError
from shared.metrics import Metrics, instrument_store
from shared.store import JobStore

log = logging.getLogger(__name__)


def make_bus(settings: BusSettings, metrics: Metrics | None = None) -> EventBus:
    if settings.kind == "rabbitmq":
        from shared.bus_rabbitmq import RabbitBus, RabbitBusConfig

        options: dict[str, Any] = {  # RabbitBusConfig's names for the bus settings
            "url": settings.url.get_secret_value(),
            "exchange": settings.exchange,
            "dead_letter_exchange": settings.dead_letter_exchange,
            "publish_timeout": settings.publish_timeout_s,
            "connect_timeout": settings.connect_timeout_s,
            "reconnect_interval": settings.reconnect_interval_s,
            "delivery_limit": settings.delivery_limit,
            "drain_timeout": settings.drain_timeout_s,
        }
        return RabbitBus(RabbitBusConfig(**options), metrics=metrics)
    from shared.bus_memory import MemoryBus

    return MemoryBus(metrics=metrics)


def make_store(settings: StoreSettings, metrics: Metrics | None = None) -> JobStore:
    """The store the settings name; its operations timed into ``metrics`` when given."""
    return instrument_store(_make_store(settings), metrics)


def _make_store(settings: StoreSettings) -> JobStore:
    if settings.kind == "mongo":
        from shared.store_mongo import MongoJobStore

        return MongoJobStore.from_url(settings.url.get_secret_value(), settings.database)
    from shared.store_sqlite import SqliteJobStore

    settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteJobStore(settings.sqlite_path)


async def start_bus(bus: EventBus, within_s: float, *, first_delay_s: float = 0.5) -> None:
    """Start ``bus``, trying again with back-off for ``within_s`` seconds while the broker cannot
    be reached (a retryable error); then, or at once for any other error, raise it."""
    deadline = time.monotonic() + within_s
    delay = first_delay_s
    while True:
        try:
            await bus.start()
        except AutoscorerError as exc:
            left = deadline - time.monotonic()
            if not exc.retryable or left <= 0:
                raise
            log.warning("the bus is not reachable yet (%s); trying again", exc.code.value)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 10.0)
        else:
            return
