"""The same job paths on a real RabbitMQ and a MongoDB-wire server (FerretDB), and on the
in-memory bus with FerretDB.

The servers come from ``scripts/provision/rabbitmq.sh`` and ``scripts/provision/ferretdb.sh``
(or ``AUTOSCORER_TEST_RABBITMQ_URL`` / ``AUTOSCORER_TEST_MONGO_URL``); without them these tests
fail, never skip. Every test has its own exchange, queues and database, removed afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.bus import RetryPolicy
from shared.errors import ErrorCode
from shared.events import JobFailed, RunCompleted, ScoreCompleted
from shared.jobs import JobStatus
from shared.models import RunOutcome
from tests.scheduler.fakes import FAST_RETRY, eventually
from tests.scheduler.real import (
    Names,
    delete_topology,
    real_scheduler_rig,
    within,
)
from tests.scheduler.rig import Rig, eventually_async, scheduler_settings, submitted

pytestmark = pytest.mark.mongo

S = JobStatus


@pytest.fixture(params=[pytest.param("rabbitmq", marks=pytest.mark.rabbitmq), "memory"])
def bus_kind(request: pytest.FixtureRequest) -> str:
    """RabbitMQ + FerretDB is the real deployment; the memory bus on FerretDB isolates the store."""
    return str(request.param)


@pytest.fixture
def names() -> Names:
    return Names.fresh()


@pytest.fixture
async def real_rig(names: Names, bus_kind: str) -> AsyncIterator[Rig]:
    settings = scheduler_settings(queue=names.queue("scheduler.jobs"), max_attempts=2)
    try:
        async with real_scheduler_rig(bus_kind, names, settings) as rig:
            yield rig
    finally:
        if bus_kind == "rabbitmq":
            async with within("deleting the test queues"):
                await delete_topology(names, topology(names))


def topology(names: Names) -> list[tuple[str, RetryPolicy]]:
    return [
        (names.queue("scheduler.jobs"), RetryPolicy()),
        *((names.queue(q), FAST_RETRY) for q in ("executor.local", "scorer.requests", "observer")),
    ]


async def test_jobs_take_every_path(real_rig: Rig) -> None:
    rig = real_rig
    rig.executor.duplicate = rig.scorer.duplicate = True
    rig.executor.plans = {1: "platform_error"}
    retried, other = submitted("job-retried"), submitted("job-other")
    for event in (retried, retried, other):
        await rig.bus.publish(event)

    job = await rig.wait_status("job-retried", S.SUCCEEDED, timeout=30)
    assert [h.status for h in job.history] == [
        S.SUBMITTED, S.QUEUED, S.RUNNING, S.QUEUED, S.RUNNING, S.SCORING, S.SUCCEEDED,
    ]  # fmt: skip
    assert [r.platform_failure for r in job.attempts.records] == [True, False]
    assert job.result is not None and job.result.summary == {"accuracy": 0.75}

    job = await rig.wait_status("job-other", S.SUCCEEDED, timeout=30)
    assert job.attempts.count == 2
    scored = {"job-retried", "job-other"}
    await eventually(lambda: {e.job_id for e in rig.observer.of_type(ScoreCompleted)} == scored)
    await eventually_async(lambda: _outbox_empty(rig, "job-retried"))
    runs = {(r.job_id, r.attempt) for r in rig.executor.requests}
    assert runs == {("job-retried", 1), ("job-retried", 2), ("job-other", 1), ("job-other", 2)}


async def test_a_lost_executor_fails_the_job_after_max_attempts(real_rig: Rig) -> None:
    rig = real_rig
    rig.executor.plans = {1: "vanish", 2: "vanish"}
    await rig.bus.publish(submitted("job-vanished"))

    job = await rig.wait_status("job-vanished", S.FAILED, timeout=30)

    assert job.error is not None and job.error.code is ErrorCode.EXEC_ERROR
    assert [r.platform_failure for r in job.attempts.records] == [True, True]
    assert job.lease is None
    await eventually(lambda: rig.observer.of_type(JobFailed, "job-vanished"), timeout=30)


async def test_a_score_only_job_is_scored_when_the_platform_reports_its_run(
    real_rig: Rig,
) -> None:
    rig = real_rig
    ran = RunCompleted(
        job_id="job-platform",
        outcome=RunOutcome(job_id="job-platform", backend="platform", status="succeeded"),
    )
    await rig.bus.publish(ran)  # before the job exists: retried by the bus
    await rig.bus.publish(submitted("job-platform", container=False))

    job = await rig.wait_status("job-platform", S.SUCCEEDED, timeout=30)

    assert [h.status for h in job.history][-3:] == [S.RUNNING, S.SCORING, S.SUCCEEDED]
    assert rig.executor.requests == []


async def _outbox_empty(rig: Rig, job_id: str) -> bool:
    return (await rig.job(job_id)).outbox == []
