"""``autoscorer serve``: the four services in one process (embedded default: in-memory bus,
SQLite store, local backend), or whatever the settings name.

The gateway's /readyz reports the background loops of all four: its own supervisor's and the
``supervisor`` of the scheduler, the executor service and the scorer service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from services.executor.main import create_executor_service
from services.executor.registry import create_executor
from services.gateway.health import report_loops
from services.gateway.main import create_gateway, open_parts, serve_app
from services.scheduler.main import create_scheduler
from services.scorer.main import create_scorer_service
from services.scorer.plugins import registry_from_settings
from shared.config import ApiKey, Settings, backend_config
from shared.connect import start_bus
from shared.metrics import Metrics
from shared.runtime import run_service
from shared.supervise import Supervisor

log = logging.getLogger(__name__)
KEY_FILE = Path(".autoscorer") / "api-key"


def ensure_admin_key(settings: Settings, key_file: Path = KEY_FILE) -> Settings:
    """With no API keys configured, make an admin key and keep it in ``key_file`` (mode 0600)."""
    gateway = settings.gateway
    if gateway.api_keys or gateway.insecure_no_auth:
        return settings
    key_file.parent.mkdir(parents=True, exist_ok=True)
    if key_file.is_file():
        key = key_file.read_text().strip()
    else:
        key = secrets.token_urlsafe(24)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
    sys.stderr.write(f"admin API key in {key_file} (autoscorer submit reads it)\n")
    admin = ApiKey.model_validate({"key": key, "subject": "admin", "role": "admin"})
    return settings.model_copy(update={"gateway": gateway.model_copy(update={"api_keys": [admin]})})


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async with AsyncExitStack() as stack:
        metrics = Metrics()  # one registry for the four services: the gateway's /metrics
        store, hooks, bus = await open_parts(settings, metrics, stack)
        registry = await asyncio.to_thread(registry_from_settings, settings.scorer)
        executor = create_executor(backend_config(settings, settings.executor_service.backend))
        stack.push_async_callback(executor.close)
        scheduler = create_scheduler(settings, bus, store, metrics)
        runner = create_executor_service(settings, bus, executor, metrics=metrics)
        scorer = create_scorer_service(settings, bus, registry, metrics=metrics)
        gateway = await create_gateway(
            settings, store, bus, hooks, metrics, scorers=registry.infos()
        )
        stack.push_async_callback(bus.close)
        for service in (scheduler, runner, scorer):
            await service.start()
            stack.push_async_callback(service.close)
        report_loops(gateway.app, supervisors(scheduler, runner, scorer))
        await start_bus(bus, settings.bus.start_within_s)
        gateway.start()
        stack.push_async_callback(gateway.close)
        await serve_app(gateway.app, settings.gateway.host, settings.gateway.port, stop)


def supervisors(*services: object) -> list[Supervisor]:
    """The ``supervisor`` each service exposes (a service without background loops has none)."""
    found = (getattr(service, "supervisor", None) for service in services)
    return [sup for sup in found if isinstance(sup, Supervisor)]


def run_serve(settings: Settings) -> None:
    run_service(ensure_admin_key(settings), "serve", serve)
