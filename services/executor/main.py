"""Composition root of the executor service: settings -> backend -> bus -> service.

``create_executor_service`` wires given parts (tests and ``autoscorer serve`` use it);
``run(settings)`` builds them from the settings and serves until SIGTERM/SIGINT:

    python -m services.executor.main        # settings from AUTOSCORER__* / AUTOSCORER_CONFIG

Expected outputs: the run must produce the ``output/`` files named in ``spec.expected_outputs``
(data on the spec: the gateway fills them from the scorer's metadata at submission, a platform
names them in its own spec). The executor knows no scorer: with no list the run is not checked
and the scorer reports ``MISSING_FILE`` instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from services.executor.base import Executor
from services.executor.registry import create_executor
from services.executor.service import ExecutorService, ExecutorServiceConfig
from shared.bus import EventBus
from shared.config import Settings, backend_config
from shared.connect import make_bus
from shared.metrics import Metrics
from shared.runtime import serve_service, service_main


def default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def service_config(settings: Settings, instance: str | None = None) -> ExecutorServiceConfig:
    section = settings.executor_service
    return ExecutorServiceConfig(
        backend=section.backend,
        instance=instance or section.replica_id or default_instance(),
        concurrency=section.concurrency,
        heartbeat_s=section.heartbeat_s,
        max_time_limit_s=section.max_time_limit_s,
        run_margin_s=section.run_margin_s,
        grace_s=section.grace_s,
        memo_size=section.memo_size,
        queue_prefix=section.queue_prefix,
        cleanup_on_start=section.cleanup_on_start,
    )


def create_executor_service(
    settings: Settings,
    bus: EventBus,
    executor: Executor,
    *,
    instance: str | None = None,
    metrics: Metrics | None = None,
) -> ExecutorService:
    """The service for ``settings.executor_service.backend``; ``start()`` it, then the bus.
    ``metrics`` reads its runs in flight and watches its loops."""
    config = service_config(settings, instance)
    service = ExecutorService(config, bus, executor)
    if metrics is not None:
        metrics.track_in_flight(
            config.backend, config.instance, lambda: service.in_flight, config.concurrency
        )
        metrics.watch_loops(service.supervisor)
    return service


def backend_for(settings: Settings, instance: str) -> dict[str, Any]:
    """The backend's config; a docker engine shared by replicas is split by ``instance`` so that
    ``cleanup_leftovers`` at start removes only this replica's containers."""
    config = dict(backend_config(settings, settings.executor_service.backend))
    if config["type"] == "docker":
        config.setdefault("instance", instance)
    return config


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then hand back what does not finish within the grace."""
    instance = settings.executor_service.replica_id or default_instance()
    metrics = Metrics()
    bus = make_bus(settings.bus, metrics)
    executor = create_executor(backend_for(settings, instance))
    service = create_executor_service(settings, bus, executor, instance=instance, metrics=metrics)
    banner = f"executor {instance} serving {service.config.queue}"
    port = settings.ops_http.executor_port
    try:
        await serve_service(service, bus, settings, port, banner, metrics=metrics, stop=stop)
    finally:
        await executor.close()


def main() -> None:
    service_main("executor", run)


if __name__ == "__main__":
    main()
