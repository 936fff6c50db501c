"""/healthz (the process answers) and /readyz (the bus and the store answer)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.gateway.context import GATEWAY
from services.gateway.http import ok
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.store import ListQuery

PROBE_TIMEOUT_S = 3.0


async def healthz(request: web.Request) -> web.Response:
    return ok({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    checks = {"bus": "ok" if gw.bus.ready() else "not connected", "store": "ok"}
    try:
        await asyncio.wait_for(gw.store.list_jobs(ListQuery(limit=1)), PROBE_TIMEOUT_S)
    except (AutoscorerError, TimeoutError) as exc:
        checks["store"] = f"unavailable: {exc}"
    if any(v != "ok" for v in checks.values()):
        raise AutoscorerError(
            ErrorCode.BACKEND_UNAVAILABLE,
            "the gateway is not ready",
            stage=Stage.PLATFORM,
            details=checks,
        )
    return ok({"ready": True, "checks": checks})


def routes() -> list[web.RouteDef]:
    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
