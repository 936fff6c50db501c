"""A queued job records the backend its run request went to and when (what its queue position
and GET /v1/queue count by), when first queued and when queued again after a platform failure."""

from __future__ import annotations

from services.scheduler.context import Context
from services.scheduler.retries import retry_or_fail
from services.scheduler.routing import Router
from services.scheduler.service import Scheduler
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.jobs import JobStatus
from shared.outbox import OutboxRelay
from shared.store_sqlite import SqliteJobStore
from tests.scheduler import test_handlers
from tests.scheduler.rig import submitted
from tests.scheduler.test_handlers import get, started

scheduler = test_handlers.scheduler  # the fixture


async def test_queued_jobs_carry_their_backend(
    scheduler: Scheduler, bus: MemoryBus, store: SqliteJobStore, settings: Settings
) -> None:
    router = Router.from_settings(settings.scheduler)
    await scheduler.handle(submitted("job-q"))
    job = await get(store, "job-q")
    assert job.status is JobStatus.QUEUED and job.backend == router.backends[0]
    assert job.queued_at is not None and job.queued_at >= job.created_at

    await scheduler.handle(started("job-q", attempt=1))
    ctx = Context(settings.scheduler, store, OutboxRelay(bus, store), router)
    error = AutoscorerError(ErrorCode.EXEC_ERROR, "lost", stage=Stage.EXECUTION).to_info()
    assert (await retry_or_fail(ctx, await get(store, "job-q"), error)).applied
    again = await get(store, "job-q")
    assert again.status is JobStatus.QUEUED and again.backend == router.backends[0]
    assert again.queued_at is not None and again.queued_at > job.queued_at  # back of the line
