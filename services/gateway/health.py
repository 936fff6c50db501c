"""/healthz (the process answers) and /readyz (the bus and the store answer, and every
supervised background loop is healthy).

A composition root registers the supervisors readiness reports with :func:`report_loops`: the
gateway's own (the webhook dispatcher), and in ``autoscorer serve`` also the scheduler's, the
executor service's and the scorer service's. A loop that died or keeps failing makes /readyz a
503 in the standard envelope that names the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from services.gateway.context import GATEWAY
from services.gateway.http import ok
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.ops_http import metrics_view
from shared.store import ListQuery
from shared.supervise import Supervisor

PROBE_TIMEOUT_S = 3.0


@dataclass
class Loops:
    """The supervisors whose loops readiness reports."""

    supervisors: list[Supervisor] = field(default_factory=list)

    def names(self) -> list[str]:
        """Every loop readiness watches, as ``<service>/<name>``."""
        return sorted(f"{sup.service}/{name}" for sup in self.supervisors for name in sup.health())

    def unhealthy(self) -> dict[str, str]:
        """``{"loop <service>/<name>": why}`` for every loop readiness must report."""
        found: dict[str, str] = {}
        for sup in self.supervisors:
            for name, h in sorted(sup.health().items()):
                if not h.healthy:
                    why = "ended" if h.ended else f"failed {h.consecutive_failures} times in a row"
                    found[f"loop {sup.service}/{name}"] = why
        return found


LOOPS = web.AppKey("loops", Loops)


def report_loops(app: web.Application, supervisors: Iterable[Supervisor]) -> None:
    """Make /readyz report these supervisors' loops too (before the app starts)."""
    if LOOPS not in app:
        app[LOOPS] = Loops()
    known = app[LOOPS].supervisors
    known.extend(s for s in supervisors if s not in known)


async def healthz(request: web.Request) -> web.Response:
    return ok({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    checks = {"bus": "ok" if gw.bus.ready() else "not connected", "store": "ok"}
    try:
        await asyncio.wait_for(gw.store.list_jobs(ListQuery(limit=1)), PROBE_TIMEOUT_S)
    except (AutoscorerError, TimeoutError) as exc:
        code = exc.code.value if isinstance(exc, AutoscorerError) else "timed out"
        checks["store"] = f"unavailable: {code}"
    loops = request.app.get(LOOPS)
    bad_loops = loops.unhealthy() if loops is not None else {}
    if loops is not None:
        checks["loops"] = "ok" if not bad_loops else "unhealthy: " + ", ".join(bad_loops)
        checks.update(bad_loops)
    if any(v != "ok" for v in checks.values()):
        failing = sorted(k for k, v in checks.items() if v != "ok" and k != "loops")
        raise AutoscorerError(
            ErrorCode.BACKEND_UNAVAILABLE,
            "the gateway is not ready: " + ", ".join(failing),
            stage=Stage.PLATFORM,
            details=checks,
        )
    watched = loops.names() if loops is not None else []
    return ok({"ready": True, "checks": checks, "loops": watched})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics_view),  # the app's METRICS, in the Prometheus text format
    ]
