"""Queue transparency: where a queued job stands (``queue`` in GET /v1/jobs/{id}) and
GET /v1/queue (admins), per backend.

A queued job's ``position`` is the number of queued jobs ahead of it on its backend (so 0 is
next), counted by the store in one indexed query in the executor queue's order: first queued,
first run (``shared.store_queue``). ``estimated_start_at`` is now plus the median of the
last runs on that backend (up to ``RECENT_RUNS``) times ``ceil(ahead / slots)``, where ``slots``
is ``gateway.queue_run_slots[backend]`` (runs at once across that backend's executor replicas;
1 when not set); null when the backend has no finished run yet.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta

from aiohttp import web
from pydantic import BaseModel, Field

from services.gateway.auth import require_admin
from services.gateway.context import GATEWAY, Gateway
from services.gateway.http import ok
from shared.jobs import Job, JobStatus, now_ms
from shared.store_queue import RECENT_RUNS, BackendQueue


class Estimate(BaseModel):
    """What an estimated start time was computed from."""

    recent_runs: int = Field(description="finished runs on the backend looked at")
    median_run_seconds: float
    run_slots: int = Field(description="runs at once on the backend (gateway.queue_run_slots)")


class QueuePosition(BaseModel):
    """Where a queued job stands on its backend."""

    position: int = Field(ge=0, description="0: next to start on its backend")
    ahead: int = Field(ge=0, description="queued jobs that start before it (same as position)")
    backend: str
    estimated_start_at: datetime | None = Field(None, description="null: no run history yet")
    estimated_from: Estimate | None = None


class BackendQueueInfo(BaseModel):
    """One backend in GET /v1/queue."""

    backend: str
    depth: int = Field(ge=0, description="queued jobs")
    running: int = Field(ge=0, description="running jobs")
    oldest_queued_age_s: float | None = Field(
        None, description="seconds since the oldest queued job was submitted; null when none"
    )


def estimate(seconds: list[float], slots: int) -> Estimate | None:
    """The start estimate's basis, or ``None`` without history."""
    if not seconds:
        return None
    return Estimate(
        recent_runs=len(seconds), median_run_seconds=statistics.median(seconds), run_slots=slots
    )


async def queue_position(gw: Gateway, job: Job) -> QueuePosition | None:
    """``job``'s place in its backend's queue; ``None`` unless it is queued on a backend."""
    if job.status is not JobStatus.QUEUED or job.backend is None:
        return None
    ahead = await gw.store.count_queued_ahead(job)
    seconds = await gw.store.recent_run_seconds(job.backend, limit=RECENT_RUNS)
    slots = gw.settings.queue_run_slots.get(job.backend, 1)
    basis = estimate(seconds, slots)
    start = None
    if basis is not None:
        waves = math.ceil(ahead / slots)
        start = now_ms() + timedelta(seconds=basis.median_run_seconds * waves)
    return QueuePosition(
        position=ahead,
        ahead=ahead,
        backend=job.backend,
        estimated_start_at=start,
        estimated_from=basis,
    )


def backend_info(queue: BackendQueue, now: datetime) -> BackendQueueInfo:
    oldest = queue.oldest_queued_at
    age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
    return BackendQueueInfo(
        backend=queue.backend, depth=queue.queued, running=queue.running, oldest_queued_age_s=age
    )


async def get_queue(request: web.Request) -> web.Response:
    require_admin(request)
    stats = await request.app[GATEWAY].store.queue_stats()
    now = now_ms()
    backends = [backend_info(queue, now).model_dump(mode="json") for queue in stats]
    return ok({"backends": backends})


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/queue", get_queue)]
