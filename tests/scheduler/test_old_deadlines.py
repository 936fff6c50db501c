"""Jobs stored before jobs had deadlines (no ``deadline_at``) in an active state get one from their
state and last update, and are reaped like any other (issue 7, class 2): on SQLite and on
FerretDB, with deadlines of a fraction of a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from shared.config import Settings
from shared.jobs import Job, JobStatus, new_job, now_ms
from shared.store import JobStore, JobUpdate
from shared.store_sqlite import SqliteJobStore
from tests.scheduler.real import Names, drop_database, open_store
from tests.scheduler.rig import Rig, reaper_settings, submitted

S = JobStatus


@pytest.fixture(params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)])
async def store(request: pytest.FixtureRequest, store_path: Path) -> AsyncIterator[JobStore]:
    names = Names.fresh("deadlines")
    sqlite = request.param == "sqlite"
    opened: JobStore = SqliteJobStore(store_path) if sqlite else open_store(names)
    await opened.init()
    yield opened
    await opened.close()
    if not sqlite:
        await drop_database(names.database)


@pytest.fixture
def settings() -> Settings:
    return reaper_settings(deadline_resends=0)


def old_job(job_id: str, *, hours_ago: float = 0.0) -> Job:
    """A job as stored before deadlines: ``deadline_at`` null, last updated ``hours_ago``."""
    event = submitted(job_id)
    job = new_job(event.spec, workspace=event.workspace, submitter="alice")
    at = now_ms() - timedelta(hours=hours_ago)
    return job.model_copy(update={"deadline_at": None, "created_at": at, "updated_at": at})


def reaped(job: Job) -> bool:
    return any("/deadline/" in (change.event_id or "") for change in job.history)


async def test_active_jobs_without_a_deadline_are_reaped(rig: Rig) -> None:
    store = rig.store
    await store.create(old_job("job-old-submitted", hours_ago=2))  # its JobSubmitted long gone
    await store.create(old_job("job-old-queued"))  # queued; its RunRequested was lost
    await store.transition("job-old-queued", S.SUBMITTED, S.QUEUED, JobUpdate(deadline_at=None))

    admitted = await rig.wait_status("job-old-submitted", S.SUCCEEDED)
    failed = await rig.wait_status("job-old-queued", S.FAILED)

    assert reaped(admitted) and reaped(failed)
    assert failed.error is not None and failed.error.code.value == "DEADLINE_EXCEEDED"
    assert await store.find_without_deadline() == []
    assert [r.job_id for r in rig.executor.requests] == ["job-old-submitted"]


async def test_a_job_that_moves_before_its_deadline_is_given_keeps_its_own(
    store: JobStore,
) -> None:
    await store.create(old_job("job-moving"))
    read = (await store.find_without_deadline())[0]
    later = now_ms() + timedelta(hours=1)
    await store.transition(read.job_id, S.SUBMITTED, S.QUEUED, JobUpdate(deadline_at=later))

    given = await store.set_deadline(read.job_id, read.status, now_ms())

    assert not given
    assert (await store.get(read.job_id)).deadline_at == later  # type: ignore[union-attr]
