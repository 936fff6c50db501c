"""The queue queries of the JobStore contract (count_queued_ahead, recent_run_seconds,
queue_stats), run against the Mongo-wire server (FerretDB) and SQLite like the rest of the
contract (the fixtures are test_store_contract's)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.jobs import AttemptRecord, Job, JobStatus
from shared.store import JobStore, JobUpdate
from shared.store_sqlite import SqliteJobStore
from tests.shared import test_store_contract as contract
from tests.shared.test_store_contract import T0, created, make_job

backend = contract.backend  # the fixtures: each test runs on FerretDB and on SQLite
store = contract.store

S = JobStatus


async def queued(
    store: JobStore, n: int, on: str, *, priority: int = 5, after_s: float = 0.0
) -> Job:
    at = T0 + timedelta(seconds=after_s)
    job = make_job(n, created_at=at)
    job = await created(store, job.model_copy(update={"priority": priority}))
    update = JobUpdate(backend=on, queued_at=at)
    moved = await store.transition(job.job_id, S.SUBMITTED, S.QUEUED, update)
    assert moved.applied
    return moved.job


async def ran(store: JobStore, n: int, on: str, seconds: float, *, after_s: float = 0.0) -> Job:
    """A job that ran ``seconds`` on ``on`` and succeeded, updated ``after_s`` after T0."""
    job = await queued(store, n, on, after_s=after_s)
    await store.transition(job.job_id, S.QUEUED, S.RUNNING)
    start = T0 + timedelta(seconds=after_s)
    record = AttemptRecord(
        number=1, backend=on, started_at=start, finished_at=start + timedelta(seconds=seconds)
    )
    await store.transition(job.job_id, S.RUNNING, S.SCORING, JobUpdate(attempt=record))
    done = await store.transition(job.job_id, S.SCORING, S.SUCCEEDED)
    assert done.applied
    return done.job


async def test_position_counts_the_jobs_queued_earlier_on_the_backend(store: JobStore) -> None:
    """First in, first out, whatever the priority: the executor queue's order."""
    low_first = await queued(store, 1, "docker", priority=2, after_s=0)
    high_last = await queued(store, 2, "docker", priority=9, after_s=30.5)
    mid = await queued(store, 3, "docker", priority=5, after_s=10)
    twin_a = await queued(store, 4, "docker", priority=5, after_s=20)
    twin_b = await queued(store, 5, "docker", priority=5, after_s=20)  # same time: by job id
    other = await queued(store, 6, "kubernetes", priority=0, after_s=0)
    started = await queued(store, 7, "docker", priority=9, after_s=0)
    await store.transition(started.job_id, S.QUEUED, S.RUNNING)
    await created(store, make_job(8).model_copy(update={"priority": 9}))  # submitted: not queued

    tied = sorted([twin_a, twin_b], key=lambda job: job.job_id)
    order = [low_first, mid, *tied, high_last]
    assert [await store.count_queued_ahead(job) for job in order] == [0, 1, 2, 3, 4]
    assert await store.count_queued_ahead(other) == 0


async def test_a_job_queued_again_goes_to_the_back(store: JobStore) -> None:
    first = await queued(store, 1, "docker", after_s=0)
    second = await queued(store, 2, "docker", after_s=1)
    await store.transition(first.job_id, S.QUEUED, S.RUNNING)
    again = T0 + timedelta(seconds=2)  # the retry after a platform failure
    update = JobUpdate(queued_at=again, backend="docker")
    retried = (await store.transition(first.job_id, S.RUNNING, S.QUEUED, update)).job

    assert await store.count_queued_ahead(second) == 0
    assert await store.count_queued_ahead(retried) == 1


async def test_recent_run_seconds_reads_the_backends_last_finished_runs(store: JobStore) -> None:
    for n, seconds in enumerate([10.0, 20.0, 30.0, 40.0]):
        await ran(store, n, "docker", seconds, after_s=n)
    await ran(store, 9, "kubernetes", 99.0)
    await queued(store, 10, "docker")  # no run yet

    took = await store.recent_run_seconds("docker", limit=50)
    assert sorted(took) == [10.0, 20.0, 30.0, 40.0]
    assert len(await store.recent_run_seconds("docker", limit=2)) == 2
    assert await store.recent_run_seconds("kubernetes") == [99.0]
    assert await store.recent_run_seconds("local") == []


async def test_queue_stats_counts_queued_and_running_per_backend(store: JobStore) -> None:
    assert await store.queue_stats() == []
    await queued(store, 1, "docker", after_s=5)
    await queued(store, 2, "docker", after_s=1)
    running = await queued(store, 3, "docker", after_s=0)
    await store.transition(running.job_id, S.QUEUED, S.RUNNING)
    only_running = await queued(store, 4, "kubernetes")
    await store.transition(only_running.job_id, S.QUEUED, S.RUNNING)
    await ran(store, 5, "docker", 3.0)

    stats = {queue.backend: queue for queue in await store.queue_stats()}
    assert sorted(stats) == ["docker", "kubernetes"]
    docker, k8s = stats["docker"], stats["kubernetes"]
    assert (docker.queued, docker.running) == (2, 1)
    assert docker.oldest_queued_at == T0 + timedelta(seconds=1)
    assert (k8s.queued, k8s.running, k8s.oldest_queued_at) == (0, 1, None)


QUEUE = st.lists(
    st.tuples(st.sampled_from(["docker", "kubernetes"]), st.integers(0, 5), st.booleans()),
    max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(QUEUE)
def test_position_is_the_count_of_earlier_queued_jobs_on_the_backend(
    tmp_path_factory: pytest.TempPathFactory, jobs: list[tuple[str, int, bool]]
) -> None:
    """Any mix of backends, queue times (ties included) and running jobs, on SQLite: the count
    is what sorting the queued jobs of each backend by (queued_at, job_id) gives."""
    path = tmp_path_factory.mktemp("queue") / "jobs.sqlite3"

    async def check() -> None:
        store = SqliteJobStore(path)
        await store.init()
        try:
            made = [
                await queued(store, n, on, after_s=float(at)) for n, (on, at, _) in enumerate(jobs)
            ]
            for job, (_, _, runs) in zip(made, jobs, strict=True):
                if runs:
                    await store.transition(job.job_id, S.QUEUED, S.RUNNING)
            waiting = [job for job, (_, _, runs) in zip(made, jobs, strict=True) if not runs]
            for job in waiting:
                line = sorted(
                    (j for j in waiting if j.backend == job.backend),
                    key=lambda j: (j.queued_at, j.job_id),
                )
                assert await store.count_queued_ahead(job) == line.index(job)
        finally:
            await store.close()

    asyncio.run(check())
