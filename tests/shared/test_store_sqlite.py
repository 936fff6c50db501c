"""What only the SQLite store has to show: two connections (two processes' worth) on one file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.jobs import JobStatus, new_job
from shared.models import JobSpec
from shared.store import TransitionOutcome
from shared.store_sqlite import SqliteJobStore

S = JobStatus


@pytest.fixture
async def two_stores(tmp_path: Path) -> AsyncIterator[tuple[SqliteJobStore, SqliteJobStore]]:
    path = tmp_path / "jobs.sqlite3"
    first, second = SqliteJobStore(path), SqliteJobStore(path)
    await first.init()
    await second.init()
    yield first, second
    await first.close()
    await second.close()


async def test_one_of_many_transitions_wins_across_connections(
    two_stores: tuple[SqliteJobStore, SqliteJobStore],
) -> None:
    first, second = two_stores
    job = new_job(JobSpec(scorer="rmse"), workspace="/ws/a")
    await first.create(job)
    await first.transition(job.job_id, S.SUBMITTED, S.QUEUED)

    moves = [
        (first if n % 2 else second).transition(job.job_id, S.QUEUED, S.RUNNING, event_id=f"e{n}")
        for n in range(20)
    ]
    outcomes = [moved.outcome for moved in await asyncio.gather(*moves)]

    assert outcomes.count(TransitionOutcome.APPLIED) == 1
    assert outcomes.count(TransitionOutcome.STATE_MISMATCH) == 19
    assert (await second.get(job.job_id)) == (await first.get(job.job_id))


async def test_a_job_created_through_one_connection_is_seen_by_the_other(
    two_stores: tuple[SqliteJobStore, SqliteJobStore],
) -> None:
    first, second = two_stores
    job = new_job(JobSpec(scorer="rmse"), workspace="/ws/b", idempotency_key="k")

    await first.create(job)
    again = await second.create(
        new_job(JobSpec(scorer="rmse"), workspace="/ws/b", idempotency_key="k")
    )

    assert not again.created
    assert again.job == job
