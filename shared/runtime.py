"""What every service's ``main()`` does: settings, logging (shared.logs), tracing, stop on
SIGTERM/SIGINT, and the serving of a bus-driven service (``serve_service``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from shared.bus import EventBus
from shared.config import Settings, load_settings
from shared.connect import start_bus
from shared.joblog import set_job_log_cap
from shared.logs import setup_logging
from shared.metrics import Metrics
from shared.ops_http import Readiness, ops_app, serving
from shared.store import JobStore
from shared.supervise import Supervisor
from shared.telemetry import setup_tracing, shutdown_tracing

Run = Callable[[Settings, asyncio.Event], Awaitable[None]]

log = logging.getLogger(__name__)


class Service(Protocol):
    """A service driven by the bus: its loops under ``supervisor``, subscribed by ``start()``."""

    supervisor: Supervisor

    async def start(self) -> None: ...

    async def close(self) -> None: ...


async def serve_service(
    service: Service,
    bus: EventBus,
    settings: Settings,
    port: int,
    banner: str,
    *,
    metrics: Metrics,
    stop: asyncio.Event | None = None,
    store: JobStore | None = None,
) -> None:
    """Start ``service`` (and ``store`` first), then the bus; serve its /metrics and probes on
    ``port`` until ``stop`` (default: SIGTERM/SIGINT); then close the service, bus and store."""
    ops = ops_app(metrics, Readiness(bus, store, [service.supervisor]))
    stop = stop or stop_on_signals()
    try:
        if store is not None:
            await store.init()
        await service.start()
        await start_bus(bus, settings.bus.start_within_s)
        log.info("%s", banner)
        async with serving(settings.ops_http.host, port, ops):
            await stop.wait()
    finally:
        await service.close()
        await bus.close()
        if store is not None:
            await store.close()


def settings_from_env() -> Settings:
    """Settings from ``AUTOSCORER_CONFIG`` (a YAML file, optional) and ``AUTOSCORER__*``."""
    config = os.environ.get("AUTOSCORER_CONFIG")
    return load_settings(Path(config) if config else None)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (call inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_service(settings: Settings, name: str, run: Run) -> None:
    """Run ``run(settings, stop)`` until a signal sets ``stop``; traces are flushed at the end."""
    configure_logging(settings, name)
    provider = setup_tracing(settings.otel, name)

    async def main() -> None:
        await run(settings, stop_on_signals())

    try:
        asyncio.run(main())
    finally:
        shutdown_tracing(provider)


def configure_logging(settings: Settings, name: str) -> None:
    """``log.format`` / ``log.level`` on the root logger (replacing what was there, e.g. the
    CLI's quiet stderr handler); ``AUTOSCORER_LOG_LEVEL`` still overrides the level."""
    level = os.environ.get("AUTOSCORER_LOG_LEVEL")
    log = settings.log
    if level and level.upper() in logging.getLevelNamesMapping():
        log = log.model_copy(update={"level": level.upper()})
    setup_logging(log, name)
    set_job_log_cap(log.job_log_max_bytes)


def service_main(name: str, run: Run) -> None:
    run_service(settings_from_env(), name, run)
