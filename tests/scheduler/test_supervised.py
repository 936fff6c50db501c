"""The scheduler's background loops run under its Supervisor (``Scheduler.supervisor``), which
readiness reads: a relay that cannot publish shows as a failing loop, and goes on."""

from __future__ import annotations

import pytest

from services.scheduler.main import create_scheduler
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.events import RunRequested
from shared.jobs import JobStatus, new_job
from shared.outbox import outbox_entry
from shared.store_sqlite import SqliteJobStore
from tests.scheduler.rig import Rig, eventually_async, scheduler_settings, submitted


@pytest.fixture
def settings() -> Settings:
    return scheduler_settings(reaper_interval_s=0.1)


async def test_the_relay_lease_monitor_and_reaper_are_supervised_loops(rig: Rig) -> None:
    health = rig.scheduler.supervisor.health()

    assert set(health) == {"outbox relay", "lease monitor", "reaper"}
    await eventually_async(lambda: _ran(rig))
    assert rig.scheduler.supervisor.unhealthy() == []


async def _ran(rig: Rig) -> bool:
    return all(h.runs >= 2 for h in rig.scheduler.supervisor.health().values())


async def test_a_relay_that_cannot_publish_is_reported_and_keeps_trying(
    store: SqliteJobStore, settings: Settings
) -> None:
    event = submitted("job-waiting")
    await store.create(new_job(event.spec, workspace=event.workspace))
    request = RunRequested(
        job_id="job-waiting", backend="local", spec=event.spec, workspace=event.workspace
    )
    await store.transition(
        "job-waiting", JobStatus.SUBMITTED, JobStatus.QUEUED, outbox=[outbox_entry(request)]
    )
    down = MemoryBus()  # never started: it cannot publish
    scheduler = create_scheduler(settings, down, store)
    await scheduler.start()
    try:

        async def reported() -> bool:
            return "outbox relay" in scheduler.supervisor.unhealthy()

        await eventually_async(reported, timeout=20)
        relay = scheduler.supervisor.health()["outbox relay"]
        assert relay.last_error is not None and "BUS_ERROR" in relay.last_error
        assert not relay.ended  # failing, not dead: it goes on trying
    finally:
        await scheduler.close()
