"""Composition root of the scorer service: settings -> registry -> pool -> bus -> service.

``create_scorer_service`` wires given parts (tests and ``autoscorer serve`` use it);
``run(settings)`` builds them from the settings and serves until SIGTERM/SIGINT:

    python -m services.scorer.main        # settings from AUTOSCORER__* / AUTOSCORER_CONFIG
"""

from __future__ import annotations

import asyncio
import os
import socket

from services.scorer.plugins import registry_from_settings
from services.scorer.pool import ScoringPool
from services.scorer.registry import ScorerRegistry
from services.scorer.service import ScorerService, ScorerServiceConfig
from shared.bus import EventBus
from shared.config import Settings
from shared.connect import make_bus
from shared.metrics import Metrics
from shared.runtime import serve_service, service_main


def default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def service_config(settings: Settings, instance: str | None = None) -> ScorerServiceConfig:
    section = settings.scorer
    return ScorerServiceConfig(
        instance=instance or section.replica_id or default_instance(),
        plugin_dir=section.plugin_dir,
        concurrency=section.pool_size,
        watch_paths=tuple(section.plugin_paths) if section.watch else (),
        grace_s=section.grace_s,
        queue_prefix=section.queue_prefix,
    )


def create_scorer_service(
    settings: Settings,
    bus: EventBus,
    registry: ScorerRegistry,
    *,
    pool: ScoringPool | None = None,
    instance: str | None = None,
    metrics: Metrics | None = None,
) -> ScorerService:
    """The service; call ``start()`` (starts the workers, subscribes) then start the bus.
    ``metrics`` counts scorer errors and watches the service's loops."""
    section = settings.scorer
    pool = pool or ScoringPool(section.pool_size, section.time_limit)
    config = service_config(settings, instance)
    service = ScorerService(config, bus, registry, pool, metrics=metrics)
    if metrics is not None:
        metrics.watch_loops(service.supervisor)
    return service


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then hand back what does not finish within the grace."""
    registry = await asyncio.to_thread(registry_from_settings, settings.scorer)
    metrics = Metrics()
    bus = make_bus(settings.bus, metrics)
    service = create_scorer_service(settings, bus, registry, metrics=metrics)
    config = service.config
    banner = f"scorer {config.instance} serving {config.requests_queue}"
    port = settings.ops_http.scorer_port
    await serve_service(service, bus, settings, port, banner, metrics=metrics, stop=stop)


def main() -> None:
    service_main("scorer", run)


if __name__ == "__main__":
    main()
