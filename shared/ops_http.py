"""The small HTTP port of the scheduler, the executor and the scorer: GET /metrics (Prometheus
text format), /healthz (the process answers) and /readyz (the bus is connected, the store
answers where the service has one, and no supervised loop is unhealthy).

Each composition root builds a :class:`Readiness` and runs :func:`serving` around its life:

    async with serving(settings.ops_http.host, port, ops_app(metrics, readiness)):
        await stop.wait()

Port 0 serves nothing. The answers are the standard envelope (``shared.errors``): /readyz is a
503 ``BACKEND_UNAVAILABLE`` naming what is not ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from shared.bus import EventBus
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.metrics import CONTENT_TYPE, Metrics
from shared.store import JobStore, ListQuery
from shared.supervise import Supervisor, describe

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0


@dataclass
class Readiness:
    """What /readyz checks for one service."""

    bus: EventBus
    store: JobStore | None = None
    supervisors: Sequence[Supervisor] = field(default_factory=list)

    async def checks(self) -> dict[str, str]:
        """``{check: "ok" | why not}``; every value "ok" means ready."""
        found = {"bus": "ok" if self.bus.ready() else "not connected"}
        if self.store is not None:
            found["store"] = await _probe(self.store)
        for sup in self.supervisors:
            for name in sup.unhealthy():
                found[f"loop {sup.service}/{name}"] = "unhealthy"
        return found


async def _probe(store: JobStore) -> str:
    try:
        await asyncio.wait_for(store.list_jobs(ListQuery(limit=1)), PROBE_TIMEOUT_S)
    except AutoscorerError as exc:
        return f"unavailable: {exc.code.value}"
    except TimeoutError:
        return "unavailable: timed out"
    except Exception as exc:  # noqa: BLE001 - the probe's boundary: any failure is "not ready"
        log.warning("store probe failed: %s", describe(exc))
        return f"unavailable: {type(exc).__name__}"
    return "ok"


METRICS = web.AppKey("metrics", Metrics)
READINESS = web.AppKey("readiness", Readiness)


def _envelope(data: object, status: int = 200) -> web.Response:
    return web.json_response({"ok": True, "data": data, "meta": {}}, status=status)


async def metrics_view(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    return _envelope({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[READINESS].checks()
    failing = sorted(k for k, v in checks.items() if v != "ok")
    if failing:
        error = AutoscorerError(
            ErrorCode.BACKEND_UNAVAILABLE,
            "not ready: " + ", ".join(failing),
            stage=Stage.PLATFORM,
            details=checks,
        )
        body = {"ok": False, "error": error.to_info().model_dump(mode="json"), "meta": {}}
        return web.json_response(body, status=503)
    return _envelope({"ready": True, "checks": checks})


def ops_app(metrics: Metrics, readiness: Readiness) -> web.Application:
    app = web.Application()
    app[METRICS] = metrics
    app[READINESS] = readiness
    app.add_routes(
        [
            web.get("/metrics", metrics_view),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
        ]
    )
    return app


@asynccontextmanager
async def serving(host: str, port: int, app: web.Application) -> AsyncIterator[int]:
    """Serve ``app`` on ``host:port`` inside the block; yields the bound port (0: not served)."""
    if port == 0:
        yield 0
        return
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("ops http (metrics, healthz, readyz) on %s:%d", host, port)
        yield port
    finally:
        await runner.cleanup()
