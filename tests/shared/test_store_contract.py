"""The JobStore contract, run against MongoDB-wire (FerretDB, or a real MongoDB) and SQLite.

The Mongo-wire server is the one ``scripts/provision/ferretdb.sh`` starts, or the one named by
``AUTOSCORER_TEST_MONGO_URL``. When it is absent the ``mongo`` tests fail; they never skip. Each
test gets its own database (dropped afterwards) or its own SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.jobs import (
    PROCESSED_EVENTS_KEPT,
    AttemptRecord,
    IllegalTransitionError,
    Job,
    JobStatus,
    Lease,
    OutboxEntry,
    new_job,
)
from shared.models import JobSpec, Result, RunOutcome
from shared.store import (
    CLAIM_GRACE,
    JobNotFoundError,
    JobStore,
    JobUpdate,
    ListQuery,
    Step,
    TransitionOutcome,
)
from shared.store_mongo import MongoJobStore
from shared.store_sqlite import SqliteJobStore

S = JobStatus
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(seconds=30)


def mongo_url() -> str:
    return os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017")


@dataclass
class Backend:
    """Opens stores over one storage (a database or a file), so a test can re-open it."""

    kind: str
    opener: Callable[[], JobStore]
    opened: list[JobStore] = field(default_factory=list)
    database: str = ""  # the Mongo database, for tests that write old documents into it

    async def open(self) -> JobStore:
        store = self.opener()
        self.opened.append(store)
        await store.init()
        return store


@pytest.fixture(params=[pytest.param("mongo", marks=pytest.mark.mongo), "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind = str(request.param)
    database = f"autoscorer_test_{uuid.uuid4().hex[:12]}"
    url = mongo_url()
    if kind == "mongo":
        rig = Backend(
            kind, lambda: MongoJobStore.from_url(url, database, timeoutMS=10_000), database=database
        )
    else:
        path = tmp_path / "jobs.sqlite3"
        rig = Backend(kind, lambda: SqliteJobStore(path))
    try:
        yield rig
    finally:
        for store in rig.opened:
            await store.close()
        if kind == "mongo":
            await drop_database(url, database)


async def drop_database(url: str, database: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url, timeoutMS=10_000)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


@pytest.fixture
async def store(backend: Backend) -> JobStore:
    return await backend.open()


def make_job(
    n: int = 0,
    *,
    submitter: str = "alice",
    scorer: str = "classification",
    key: str | None = None,
    workspace: str | None = None,
    created_at: datetime | None = None,
) -> Job:
    job_id = f"job-{n:04d}-{uuid.uuid4().hex[:6]}"
    spec = JobSpec(job_id=job_id, scorer=scorer)
    job = new_job(
        spec,
        workspace=workspace or f"/ws/{job_id}",
        submitter=submitter,
        idempotency_key=key,
        trace_context={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    )
    if created_at is not None:
        job = job.model_copy(update={"created_at": created_at, "updated_at": created_at})
    return job


async def created(store: JobStore, job: Job) -> Job:
    result = await store.create(job)
    assert result.created
    return result.job


async def walk(store: JobStore, job_id: str, *states: JobStatus) -> Job:
    """Move a job along ``states`` (each from the state before it)."""
    job = await store.get(job_id)
    assert job is not None
    for state in states:
        moved = await store.transition(job_id, job.status, state)
        assert moved.applied, moved
        job = moved.job
    return job


# --- create / get ---------------------------------------------------------------------------


async def test_created_job_reads_back_equal(store: JobStore) -> None:
    job = make_job(key="req-1")

    result = await store.create(job)

    assert result.created
    assert await store.get(job.job_id) == job


async def test_get_of_unknown_job_is_none(store: JobStore) -> None:
    assert await store.get("job-does-not-exist") is None


async def test_second_create_with_same_idempotency_key_returns_the_first_job(
    store: JobStore,
) -> None:
    first = await created(store, make_job(1, key="upload-42"))

    again = await store.create(make_job(2, key="upload-42"))

    assert not again.created
    assert again.job == first
    assert (await store.list_jobs(ListQuery())).jobs == [first]


async def test_second_create_with_same_job_id_returns_the_stored_job(store: JobStore) -> None:
    first = await created(store, make_job(1))

    again = await store.create(first.model_copy(update={"submitter": "mallory"}))

    assert not again.created
    assert again.job.submitter == "alice"


async def test_concurrent_creates_with_one_key_store_one_job(store: JobStore) -> None:
    jobs = [make_job(i, key="same-request") for i in range(10)]

    results = await asyncio.gather(*(store.create(job) for job in jobs))

    assert sum(r.created for r in results) == 1
    assert len({r.job.job_id for r in results}) == 1


async def test_jobs_without_key_do_not_collide(store: JobStore) -> None:
    for n in range(3):
        await created(store, make_job(n))

    assert len((await store.list_jobs(ListQuery())).jobs) == 3


# --- list -----------------------------------------------------------------------------------


async def test_list_filters_by_status_submitter_scorer_and_creation_time(store: JobStore) -> None:
    a = await created(store, make_job(1, submitter="alice", created_at=T0))
    b = await created(store, make_job(2, submitter="bob", created_at=T0 + timedelta(hours=1)))
    c = await created(
        store, make_job(3, scorer="rmse", submitter="bob", created_at=T0 + timedelta(hours=2))
    )
    await walk(store, b.job_id, S.QUEUED, S.RUNNING)

    async def ids(**filters: object) -> list[str]:
        page = await store.list_jobs(ListQuery.model_validate(filters))
        return [job.job_id for job in page.jobs]

    assert await ids() == [c.job_id, b.job_id, a.job_id]
    assert await ids(status={S.RUNNING}) == [b.job_id]
    assert await ids(status={S.RUNNING, S.SUBMITTED}) == [c.job_id, b.job_id, a.job_id]
    assert await ids(submitter="bob") == [c.job_id, b.job_id]
    assert await ids(scorer="rmse") == [c.job_id]
    assert await ids(submitter="bob", status={S.SUBMITTED}) == [c.job_id]
    window = {"created_from": T0 + timedelta(hours=1), "created_to": T0 + timedelta(hours=2)}
    assert await ids(**window) == [b.job_id]
    assert await ids(created_from=T0 + timedelta(minutes=1)) == [c.job_id, b.job_id]
    assert await ids(submitter="carol") == []


async def test_pages_stay_stable_when_jobs_arrive_between_them(store: JobStore) -> None:
    # two jobs share a timestamp, so the job id has to break the tie
    times = [T0 + timedelta(minutes=m) for m in (0, 1, 2, 2, 3, 4, 5)]
    jobs = [await created(store, make_job(i, created_at=at)) for i, at in enumerate(times)]
    newest_first = sorted(jobs, key=lambda j: (j.created_at, j.job_id), reverse=True)

    seen: list[Job] = []
    query = ListQuery(limit=3)
    while True:
        page = await store.list_jobs(query)
        seen += page.jobs
        await created(store, make_job(len(seen) + 100, created_at=T0 + timedelta(hours=1)))
        if page.next_cursor is None:
            break
        query = ListQuery(limit=3, cursor=page.next_cursor)

    assert [j.job_id for j in seen] == [j.job_id for j in newest_first]


async def test_last_full_page_has_no_cursor(store: JobStore) -> None:
    for n in range(4):
        await created(store, make_job(n, created_at=T0 + timedelta(seconds=n)))

    first = await store.list_jobs(ListQuery(limit=2))
    assert first.next_cursor is not None
    second = await store.list_jobs(ListQuery(limit=2, cursor=first.next_cursor))

    assert len(second.jobs) == 2
    assert second.next_cursor is None


def test_a_cursor_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValidationError, match="cursor"):
        ListQuery(cursor="not-a-cursor")


# --- transitions ----------------------------------------------------------------------------


async def test_a_job_walks_the_whole_life_cycle_with_history(store: JobStore) -> None:
    job = await created(store, make_job())
    outcome = RunOutcome(job_id=job.job_id, backend="docker", status="succeeded", exit_code=0)
    result = Result(summary={"accuracy": 0.91}, metrics={"accuracy": 0.91})

    await walk(store, job.job_id, S.QUEUED, S.RUNNING)
    scoring = await store.transition(
        job.job_id, S.RUNNING, S.SCORING, JobUpdate(run_outcome=outcome), reason="run done"
    )
    done = await store.transition(job.job_id, S.SCORING, S.SUCCEEDED, JobUpdate(result=result))

    assert scoring.outcome is TransitionOutcome.APPLIED
    assert done.applied
    stored = await store.get(job.job_id)
    assert stored == done.job
    assert stored.status is S.SUCCEEDED
    assert stored.run_outcome == outcome
    assert stored.result == result
    assert [h.status for h in stored.history] == [
        S.SUBMITTED, S.QUEUED, S.RUNNING, S.SCORING, S.SUCCEEDED,
    ]  # fmt: skip
    assert stored.history[3].reason == "run done"
    assert stored.updated_at >= stored.created_at


async def test_finished_jobs_can_be_scored_again(store: JobStore) -> None:
    job = await created(store, make_job())
    await walk(store, job.job_id, S.QUEUED, S.RUNNING, S.SCORING, S.FAILED)

    rescore = await store.transition(job.job_id, {S.SUCCEEDED, S.FAILED}, S.SCORING)

    assert rescore.applied
    assert rescore.job.status is S.SCORING


async def test_an_illegal_transition_raises_and_changes_nothing(store: JobStore) -> None:
    job = await created(store, make_job())

    with pytest.raises(IllegalTransitionError) as caught:
        await store.transition(job.job_id, S.SUBMITTED, S.SUCCEEDED)

    assert caught.value.code is ErrorCode.INTERNAL_ERROR
    assert caught.value.details == {"from": "submitted", "to": "succeeded"}
    assert await store.get(job.job_id) == job


async def test_any_illegal_source_state_makes_the_transition_illegal(store: JobStore) -> None:
    job = await created(store, make_job())

    with pytest.raises(IllegalTransitionError, match="cancelled -> queued"):
        await store.transition(job.job_id, {S.SUBMITTED, S.CANCELLED}, S.QUEUED)


async def test_transition_from_another_state_is_a_mismatch_not_a_change(store: JobStore) -> None:
    job = await created(store, make_job())

    moved = await store.transition(job.job_id, S.QUEUED, S.RUNNING)

    assert moved.outcome is TransitionOutcome.STATE_MISMATCH
    assert moved.job == job
    assert await store.get(job.job_id) == job


async def test_transition_of_unknown_job_raises_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFoundError, match="job-missing"):
        await store.transition("job-missing", S.SUBMITTED, S.QUEUED)


async def test_exactly_one_of_twenty_concurrent_transitions_wins(store: JobStore) -> None:
    job = await created(store, make_job())
    await walk(store, job.job_id, S.QUEUED)

    async def claim(n: int) -> TransitionOutcome:
        lease = Lease(owner=f"worker-{n}", expires_at=T0)
        moved = await store.transition(
            job.job_id, S.QUEUED, S.RUNNING, JobUpdate(lease=lease), event_id=f"claim-{n}"
        )
        return moved.outcome

    outcomes = await asyncio.gather(*(claim(n) for n in range(20)))

    assert outcomes.count(TransitionOutcome.APPLIED) == 1
    assert outcomes.count(TransitionOutcome.STATE_MISMATCH) == 19
    stored = await store.get(job.job_id)
    assert [h.status for h in stored.history].count(S.RUNNING) == 1
    winner = outcomes.index(TransitionOutcome.APPLIED)
    assert stored.lease is not None
    assert stored.lease.owner == f"worker-{winner}"
    assert stored.processed_event_ids == [f"claim-{winner}"]


async def test_an_event_processed_twice_changes_nothing_the_second_time(store: JobStore) -> None:
    job = await created(store, make_job())
    first = await store.transition(job.job_id, S.SUBMITTED, S.QUEUED, event_id="evt-1")

    again = await store.transition(
        job.job_id, {S.SUBMITTED, S.QUEUED}, S.CANCELLED, event_id="evt-1"
    )

    assert first.applied
    assert again.outcome is TransitionOutcome.DUPLICATE_EVENT
    assert again.job == first.job
    assert await store.get(job.job_id) == first.job


async def test_processed_event_ids_are_bounded_keeping_the_newest(store: JobStore) -> None:
    job = await created(store, make_job())
    await walk(store, job.job_id, S.QUEUED, S.RUNNING, S.SCORING)
    state = S.SCORING
    total = PROCESSED_EVENTS_KEPT + 5
    for n in range(total):
        target = S.SUCCEEDED if state is S.SCORING else S.SCORING
        assert (await store.transition(job.job_id, state, target, event_id=f"e{n}")).applied
        state = target

    stored = await store.get(job.job_id)

    assert stored.processed_event_ids == [f"e{n}" for n in range(5, total)]


async def test_retry_after_a_platform_failure_records_both_attempts(store: JobStore) -> None:
    job = await created(store, make_job())
    await walk(store, job.job_id, S.QUEUED)
    first = AttemptRecord(number=1, backend="docker", started_at=T0)
    failed = first.model_copy(
        update={"finished_at": T0 + timedelta(seconds=5), "outcome_code": "BACKEND_UNAVAILABLE",
                "platform_failure": True}
    )  # fmt: skip
    second = AttemptRecord(number=2, backend="kubernetes", started_at=T0 + timedelta(minutes=1))

    await store.transition(job.job_id, S.QUEUED, S.RUNNING, JobUpdate(attempt=first))
    await store.transition(job.job_id, S.RUNNING, S.QUEUED, JobUpdate(attempt=failed))
    await store.transition(job.job_id, S.QUEUED, S.RUNNING, JobUpdate(attempt=second))

    stored = await store.get(job.job_id)
    assert stored.attempts.count == 2
    assert stored.attempts.records == [failed, second]


async def test_an_attempt_number_that_skips_ahead_does_not_apply(store: JobStore) -> None:
    job = await created(store, make_job())
    await walk(store, job.job_id, S.QUEUED)
    third = AttemptRecord(number=3, backend="docker", started_at=T0)

    moved = await store.transition(job.job_id, S.QUEUED, S.RUNNING, JobUpdate(attempt=third))

    assert moved.outcome is TransitionOutcome.STATE_MISMATCH
    assert moved.job.status is S.QUEUED
    assert moved.job.attempts.count == 0
    assert await store.get(job.job_id) == moved.job


async def test_an_update_writes_only_the_fields_it_names(store: JobStore) -> None:
    job = await created(store, make_job())
    lease = Lease(owner="w1", expires_at=T0)
    error = AutoscorerError(ErrorCode.EXEC_ERROR, "backend lost", stage=Stage.EXECUTION).to_info()
    queued = await store.transition(job.job_id, S.SUBMITTED, S.QUEUED, JobUpdate(priority=5))
    assert queued.job.priority == 5

    held = await store.transition(job.job_id, S.QUEUED, S.RUNNING, JobUpdate(lease=lease))
    failed = await store.transition(
        job.job_id, S.RUNNING, S.FAILED, JobUpdate(lease=None, error=error)
    )

    assert held.job.lease == lease
    assert held.job.priority == 5
    assert failed.job.lease is None
    assert failed.job.error == error
    assert failed.job.trace_context == job.trace_context


# --- leases ---------------------------------------------------------------------------------


async def test_a_free_lease_is_taken_and_a_held_one_refused(store: JobStore) -> None:
    job = await created(store, make_job())

    mine = await store.acquire_lease(job.job_id, "w1", TTL, now=T0)
    theirs = await store.acquire_lease(job.job_id, "w2", TTL, now=T0 + timedelta(seconds=10))
    again = await store.acquire_lease(job.job_id, "w1", TTL, now=T0 + timedelta(seconds=10))

    assert mine is not None
    assert mine.lease == Lease(owner="w1", expires_at=T0 + TTL)
    assert theirs is None
    assert again is not None
    assert again.lease == Lease(owner="w1", expires_at=T0 + timedelta(seconds=10) + TTL)


async def test_only_the_owner_renews_or_releases(store: JobStore) -> None:
    job = await created(store, make_job())
    await store.acquire_lease(job.job_id, "w1", TTL, now=T0)

    assert await store.renew_lease(job.job_id, "w2", TTL, now=T0) is None
    renewed = await store.renew_lease(job.job_id, "w1", TTL, now=T0 + TTL)
    assert not await store.release_lease(job.job_id, "w2")
    released = await store.release_lease(job.job_id, "w1")

    assert renewed is not None
    assert renewed.lease == Lease(owner="w1", expires_at=T0 + 2 * TTL)
    assert released
    assert (await store.get(job.job_id)).lease is None
    assert not await store.release_lease(job.job_id, "w1")
    assert await store.acquire_lease(job.job_id, "w2", TTL, now=T0) is not None


async def test_expired_leases_are_found_and_can_be_taken_over(store: JobStore) -> None:
    stale = await created(store, make_job(1))
    fresh = await created(store, make_job(2))
    await store.acquire_lease(stale.job_id, "w1", timedelta(seconds=5), now=T0)
    await store.acquire_lease(fresh.job_id, "w1", timedelta(minutes=5), now=T0)
    later = T0 + timedelta(minutes=1)

    expired = await store.find_expired_leases(now=later)
    taken = await store.acquire_lease(stale.job_id, "w2", TTL, now=later)

    assert [job.job_id for job in expired] == [stale.job_id]
    assert await store.find_expired_leases(now=T0) == []
    assert taken is not None
    assert taken.lease == Lease(owner="w2", expires_at=later + TTL)
    assert await store.find_expired_leases(now=later) == []


async def test_a_finished_job_has_no_lease_to_take(store: JobStore) -> None:
    job = await created(store, make_job())
    await walk(store, job.job_id, S.CANCELLED)

    assert await store.acquire_lease(job.job_id, "w1", TTL, now=T0) is None
    with pytest.raises(JobNotFoundError):
        await store.acquire_lease("job-missing", "w1", TTL, now=T0)


async def test_concurrent_acquires_have_one_winner(store: JobStore) -> None:
    job = await created(store, make_job())

    taken = await asyncio.gather(
        *(store.acquire_lease(job.job_id, f"w{n}", TTL, now=T0) for n in range(20))
    )

    winners = [j for j in taken if j is not None]
    assert len(winners) == 1
    assert (await store.get(job.job_id)).lease == winners[0].lease


# --- deadlines (the scheduler's reaper) ----------------------------------------------------------


async def test_overdue_active_jobs_come_earliest_deadline_first(store: JobStore) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    late, later, future, done, fresh = [await created(store, make_job(n)) for n in range(5)]
    for job, deadline in ((late, now - 2 * TTL), (later, now - TTL), (future, now + TTL)):
        moved = await store.transition(
            job.job_id, S.SUBMITTED, S.QUEUED, JobUpdate(deadline_at=deadline)
        )
        assert moved.job.deadline_at == deadline
    await store.transition(done.job_id, S.SUBMITTED, S.FAILED, JobUpdate(deadline_at=now - TTL))

    overdue = await store.find_overdue(now=now)
    first = await store.find_overdue(now=now, limit=1)
    cleared = await store.transition(later.job_id, S.QUEUED, S.RUNNING, JobUpdate(deadline_at=None))

    assert [j.job_id for j in overdue] == [late.job_id, later.job_id]
    assert [j.job_id for j in first] == [late.job_id]
    assert cleared.job.deadline_at is None
    assert [j.job_id for j in await store.find_overdue(now=now)] == [late.job_id]
    assert fresh.deadline_at is not None  # a new job's deadline: the scheduler must queue it
    assert [j.job_id for j in await store.find_overdue(now=fresh.deadline_at)] == [
        late.job_id,
        future.job_id,
        fresh.job_id,
    ]


async def test_a_transition_may_require_the_deadline_it_read(store: JobStore) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    job = await created(store, make_job())
    read = await store.transition(job.job_id, S.SUBMITTED, S.QUEUED, JobUpdate(deadline_at=now))
    later = now + TTL
    await store.transition(job.job_id, S.QUEUED, S.QUEUED, JobUpdate(deadline_at=later))

    stale = await store.transition(job.job_id, S.QUEUED, S.FAILED, if_deadline=now)
    current = await store.transition(job.job_id, S.QUEUED, S.FAILED, if_deadline=later)

    assert read.job.deadline_at == now
    assert stale.outcome is TransitionOutcome.STATE_MISMATCH
    assert current.applied and current.job.status is S.FAILED


# --- workspace, outbox, re-open -------------------------------------------------------------


async def test_the_active_job_of_a_workspace_is_found_until_it_finishes(store: JobStore) -> None:
    job = await created(store, make_job(workspace="/ws/shared"))
    await created(store, make_job(workspace="/ws/other"))

    found = await store.find_active_by_workspace("/ws/shared")
    await walk(store, job.job_id, S.QUEUED, S.RUNNING)
    running = await store.find_active_by_workspace("/ws/shared")
    await walk(store, job.job_id, S.CANCELLED)

    assert found == job
    assert running is not None
    assert running.job_id == job.job_id
    assert await store.find_active_by_workspace("/ws/shared") is None
    assert await store.find_active_by_workspace("/ws/none") is None


# --- one active job per workspace: claims ---------------------------------------------------------


async def test_a_workspace_is_claimed_by_one_job_until_released(store: JobStore) -> None:
    job = await created(store, make_job(workspace="/ws/shared"))

    first = await store.claim_workspace("/ws/shared", job.job_id)
    again = await store.claim_workspace("/ws/shared", job.job_id)
    other = await store.claim_workspace("/ws/shared", "job-other")
    elsewhere = await store.claim_workspace("/ws/elsewhere", "job-other")
    not_held = await store.release_workspace("/ws/shared", "job-other")
    released = await store.release_workspace("/ws/shared", job.job_id)
    after = await store.claim_workspace("/ws/shared", "job-other")

    assert (first, again, other, elsewhere) == (job.job_id, job.job_id, job.job_id, "job-other")
    assert (not_held, released) == (False, True)
    assert after == "job-other"


async def test_concurrent_claims_of_one_workspace_have_one_winner(backend: Backend) -> None:
    stores = [await backend.open() for _ in range(2)]  # two clients, as two gateways have
    ids = [f"job-claim-{n:02d}" for n in range(20)]

    holders = await asyncio.gather(
        *(stores[n % 2].claim_workspace("/ws/raced", job_id) for n, job_id in enumerate(ids))
    )

    assert len(set(holders)) == 1
    assert holders.count(holders[0]) == 20
    assert holders[0] in ids


async def test_a_claim_whose_job_finished_is_taken_over(store: JobStore) -> None:
    job = await created(store, make_job(workspace="/ws/shared"))
    before = job.created_at - timedelta(milliseconds=1)  # claimed, then the job was stored
    await store.claim_workspace("/ws/shared", job.job_id, now=before)
    await walk(store, job.job_id, S.CANCELLED)  # the release was lost (a crash)

    taken = await store.claim_workspace("/ws/shared", "job-next")

    assert taken == "job-next"
    assert not await store.release_workspace("/ws/shared", job.job_id)


async def test_a_claim_without_its_job_stands_for_the_grace_then_is_taken(store: JobStore) -> None:
    await store.claim_workspace("/ws/shared", "job-being-created", now=T0)

    within = await store.claim_workspace("/ws/shared", "job-b", now=T0 + CLAIM_GRACE / 2)
    after = await store.claim_workspace("/ws/shared", "job-c", now=T0 + CLAIM_GRACE)

    assert within == "job-being-created"
    assert after == "job-c"


async def test_a_finished_job_claiming_again_holds_off_others(store: JobStore) -> None:
    job = await created(store, make_job(workspace="/ws/shared"))
    done = await walk(store, job.job_id, S.QUEUED, S.RUNNING, S.SCORING, S.SUCCEEDED)
    later = done.updated_at + timedelta(milliseconds=1)

    rescoring = await store.claim_workspace("/ws/shared", job.job_id, now=later)  # not moved yet
    other = await store.claim_workspace("/ws/shared", "job-other")

    assert (rescoring, other) == (job.job_id, job.job_id)


async def test_opening_claims_the_workspaces_of_active_jobs(
    backend: Backend, store: JobStore
) -> None:
    active = await created(store, make_job(workspace="/ws/active"))  # stored without a claim
    done = await created(store, make_job(workspace="/ws/done"))
    await walk(store, done.job_id, S.CANCELLED)

    reopened = await backend.open()  # as after an upgrade: active jobs claim their workspaces

    assert await reopened.claim_workspace("/ws/active", "job-other") == active.job_id
    assert await reopened.claim_workspace("/ws/done", "job-other") == "job-other"


# --- jobs stored before deadlines --------------------------------------------------------------


async def test_active_jobs_without_a_deadline_are_found_and_given_one(
    backend: Backend, store: JobStore
) -> None:
    old = make_job(0).model_copy(update={"deadline_at": None})
    older = make_job(1, created_at=T0).model_copy(update={"deadline_at": None})
    for job in (old, older):
        await created(store, job)
    await walk(store, older.job_id, S.QUEUED)
    await store.transition(older.job_id, S.QUEUED, S.QUEUED, JobUpdate(deadline_at=None))
    finished = await created(store, make_job(2).model_copy(update={"deadline_at": None}))
    await walk(store, finished.job_id, S.CANCELLED)
    if backend.kind == "mongo":  # a document written before the field existed has none at all
        await unset_field(backend.database, old.job_id, "deadline_at")

    found = await store.find_without_deadline()
    moved_on = await store.set_deadline(old.job_id, S.QUEUED, T0)
    given = await store.set_deadline(old.job_id, S.SUBMITTED, T0)
    twice = await store.set_deadline(old.job_id, S.SUBMITTED, T0 + TTL)

    assert {j.job_id for j in found} == {old.job_id, older.job_id}
    assert (moved_on, given, twice) == (False, True, False)
    assert (await store.get(old.job_id)).deadline_at == T0
    assert [j.job_id for j in await store.find_without_deadline()] == [older.job_id]
    assert [j.job_id for j in await store.find_overdue(now=T0)] == [old.job_id]


async def unset_field(database: str, job_id: str, name: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url(), timeoutMS=10_000)
    try:
        await client[database]["jobs"].update_one({"_id": job_id}, {"$unset": {name: ""}})
    finally:
        await client.close()


def entry(event_id: str) -> OutboxEntry:
    return OutboxEntry(event_id=event_id, type="job.queued", payload={"n": event_id}, created_at=T0)


async def test_outbox_entries_ride_with_transitions_until_popped(store: JobStore) -> None:
    job = await created(store, make_job())
    quiet = await created(store, make_job())

    moved = await store.transition(job.job_id, S.SUBMITTED, S.QUEUED, outbox=[entry("e1")])
    appended = await store.append_outbox(job.job_id, [entry("e1"), entry("e2")])
    pending = await store.find_pending_outbox()
    popped = await store.pop_outbox(job.job_id, [entry("e1"), entry("unknown")])
    emptied = await store.pop_outbox(job.job_id, [entry("e2")])

    assert moved.job.outbox == [entry("e1")]
    assert appended.outbox == [entry("e1"), entry("e2")]
    assert [j.job_id for j in pending] == [job.job_id]
    assert popped.outbox == [entry("e2")]
    assert emptied.outbox == []
    assert await store.find_pending_outbox() == []
    assert (await store.get(quiet.job_id)).outbox == []
    with pytest.raises(JobNotFoundError):
        await store.append_outbox("job-missing", [entry("e3")])


async def test_an_entry_is_popped_by_its_event_id_whatever_form_the_caller_holds(
    store: JobStore,
) -> None:
    job = await created(store, make_job())
    await store.transition(job.job_id, S.SUBMITTED, S.QUEUED, outbox=[entry("e1"), entry("e2")])
    held = entry("e1").model_copy(update={"payload": {"n": "as the caller remembers it"}})

    popped = await store.pop_outbox(job.job_id, [held])

    assert popped.outbox == [entry("e2")]
    assert (await store.get(job.job_id)).outbox == [entry("e2")]


async def test_a_transition_pops_published_entries_in_the_same_update(store: JobStore) -> None:
    """The relay's pop rides on the job's next transition: what it popped is gone from the job
    the transition answers with and from the store; an entry no longer pending is ignored."""
    job = await created(store, make_job())
    queued = await store.transition(
        job.job_id, S.SUBMITTED, S.QUEUED, outbox=[entry("e1"), entry("e2")]
    )
    published = [e for e in queued.job.outbox if e.event_id == "e1"]

    moved = await store.transition(
        job.job_id, S.QUEUED, S.RUNNING, event_id="run", pop=[*published, entry("gone")]
    )

    assert moved.applied
    assert moved.job.outbox == [entry("e2")]
    assert (await store.get(job.job_id)).outbox == [entry("e2")]
    with pytest.raises(ValueError, match="both"):
        await store.transition(
            job.job_id, S.RUNNING, S.SCORING, outbox=[entry("e3")], pop=[entry("e2")]
        )


async def test_a_transition_given_the_attempt_count_acts_only_on_that_count(
    store: JobStore,
) -> None:
    job = await created(store, make_job())
    await walk(store, job.job_id, S.QUEUED)
    first = AttemptRecord(number=1, backend="local", started_at=T0)

    stale = await store.transition(
        job.job_id, S.QUEUED, S.RUNNING, JobUpdate(attempt=first), if_attempts=1
    )
    moved = await store.transition(
        job.job_id, S.QUEUED, S.RUNNING, JobUpdate(attempt=first), if_attempts=0
    )

    assert stale.outcome is TransitionOutcome.STATE_MISMATCH
    assert stale.job.status is S.QUEUED
    assert moved.applied
    assert moved.job.attempts.count == 1


async def test_a_transition_through_a_state_records_both_steps_in_one_update(
    store: JobStore,
) -> None:
    job = await created(store, make_job())
    await walk(store, job.job_id, S.QUEUED)
    through = Step(S.RUNNING, "start", "ran elsewhere")

    moved = await store.transition(
        job.job_id, S.QUEUED, S.SCORING, event_id="end", through=through, outbox=[entry("e1")]
    )
    again = await store.transition(job.job_id, S.QUEUED, S.SCORING, event_id="end", through=through)

    assert moved.applied
    assert [h.status for h in moved.job.history][-2:] == [S.RUNNING, S.SCORING]
    assert moved.job.history[-2].reason == "ran elsewhere"
    assert moved.job.processed_event_ids[-2:] == ["start", "end"]
    assert moved.job.outbox == [entry("e1")]
    assert await store.get(job.job_id) == moved.job
    assert again.outcome is TransitionOutcome.DUPLICATE_EVENT
    with pytest.raises(IllegalTransitionError):
        await store.transition(job.job_id, S.QUEUED, S.SCORING, through=Step(S.SUCCEEDED))


async def test_a_transition_through_a_step_already_taken_is_a_mismatch(store: JobStore) -> None:
    job = await created(store, make_job())
    await walk(store, job.job_id, S.QUEUED)
    await store.transition(job.job_id, S.QUEUED, S.RUNNING, event_id="start")
    await store.transition(job.job_id, S.RUNNING, S.QUEUED, event_id="retry")

    moved = await store.transition(
        job.job_id, S.QUEUED, S.SCORING, event_id="end", through=Step(S.RUNNING, "start")
    )

    assert moved.outcome is TransitionOutcome.STATE_MISMATCH
    assert moved.job.status is S.QUEUED
    assert "end" not in moved.job.processed_event_ids


async def test_pending_outboxes_come_oldest_first_leaving_out_the_skipped(store: JobStore) -> None:
    jobs = [await created(store, make_job()) for _ in range(3)]
    for job in jobs:  # updated_at grows in this order
        await store.append_outbox(job.job_id, [entry(f"e-{job.job_id}")])
        await asyncio.sleep(0.002)
    first, second, third = (job.job_id for job in jobs)

    everything = await store.find_pending_outbox()
    some = await store.find_pending_outbox(limit=2, skip=[first])
    none = await store.find_pending_outbox(skip=[first, second, third])

    assert [j.job_id for j in everything] == [first, second, third]
    assert [j.job_id for j in some] == [second, third]
    assert none == []


async def test_jobs_survive_closing_and_reopening_the_store(backend: Backend) -> None:
    first = await backend.open()
    job = await created(first, make_job(key="k"))
    moved = await first.transition(job.job_id, S.SUBMITTED, S.QUEUED, outbox=[entry("e1")])
    await first.close()

    second = await backend.open()

    assert await second.get(job.job_id) == moved.job
    assert not (await second.create(make_job(key="k"))).created
    assert [j.job_id for j in (await second.list_jobs(ListQuery())).jobs] == [job.job_id]


async def test_init_twice_is_harmless(store: JobStore) -> None:
    job = await created(store, make_job())

    await store.init()

    assert await store.get(job.job_id) == job


async def test_a_sqlite_file_from_before_deadlines_gets_the_column(tmp_path: Path) -> None:
    import sqlite3

    from shared.store_sqlite import SCHEMA

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA.replace("    deadline_at      TEXT,\n", ""))
    old.close()
    store = SqliteJobStore(path)
    await store.init()
    try:
        job = await created(store, make_job())
        assert job.deadline_at is not None
        assert [j.job_id for j in await store.find_overdue(now=job.deadline_at)] == [job.job_id]
    finally:
        await store.close()


async def test_the_sqlite_job_store_is_private(tmp_path: Path) -> None:
    """Every tenant's jobs are in the file: 0600 with its -wal/-shm, a new directory 0700, and
    a file found looser is tightened (one helper with the webhook store:
    shared.sqlite_worker.connect)."""
    import stat

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    old_umask = os.umask(0o022)  # the usual umask: files 0644 unless made otherwise
    path = tmp_path / "state" / "jobs.sqlite3"
    try:
        store = SqliteJobStore(path)
        await store.init()
        await created(store, make_job())  # writes the -wal
        modes = {suffix: mode(Path(f"{path}{suffix}")) for suffix in ("", "-wal", "-shm")}
        await store.close()
        path.chmod(0o644)
        reopened = SqliteJobStore(path)
        await reopened.init()
        await reopened.close()
    finally:
        os.umask(old_umask)

    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600  # tightened when reopened
