"""The pure parts of the store: cursors, updates, and the document forms of each implementation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shared.jobs import (
    PROCESSED_EVENTS_KEPT,
    AttemptRecord,
    Attempts,
    Job,
    JobStatus,
    Lease,
    OutboxEntry,
    StatusChange,
    new_job,
)
from shared.models import JobSpec
from shared.store import (
    JobUpdate,
    ListQuery,
    apply_transition,
    decode_cursor,
    encode_cursor,
    page_of,
    with_attempt,
)
from shared.store_mongo import (
    from_document,
    list_filter,
    to_document,
    transition_filter,
    transition_operators,
)
from shared.store_sqlite import list_where, row_of, timestamp

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = JobStatus


def job(n: int = 0, **changes: Any) -> Job:
    made = new_job(JobSpec(job_id=f"job-{n}", scorer="rmse"), workspace=f"/ws/{n}")
    return made.model_copy(update=changes)


def test_a_cursor_names_the_last_job_of_its_page() -> None:
    last = job(3, created_at=T0)

    assert decode_cursor(encode_cursor(last)) == (T0, "job-3")


@pytest.mark.parametrize("bad", ["", "!!!", "bm90IGpzb24", "WzEsMl0", "WyIyMDI2LTAxLTAxIiwgIngiXQ"])
def test_anything_else_is_not_a_cursor(bad: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor(bad)


def test_list_query_bounds_the_page_size() -> None:
    with pytest.raises(ValidationError):
        ListQuery(limit=0)
    with pytest.raises(ValidationError):
        ListQuery(limit=100_000)


def test_a_page_gets_a_cursor_only_when_more_jobs_follow() -> None:
    jobs = [job(n) for n in range(3)]

    assert page_of(jobs[:2], 2).next_cursor is None
    more = page_of(jobs, 2)
    assert more.jobs == jobs[:2]
    assert more.next_cursor == encode_cursor(jobs[1])


def test_an_update_names_only_the_fields_given() -> None:
    assert JobUpdate().fields() == {}
    assert JobUpdate(lease=None).fields() == {"lease": None}
    assert JobUpdate(priority=3).fields() == {"priority": 3}
    record = AttemptRecord(number=1, backend="docker", started_at=T0)
    assert JobUpdate(attempt=record).fields() == {}


def test_attempt_records_are_kept_by_number() -> None:
    first = AttemptRecord(number=1, backend="docker", started_at=T0)
    done = first.model_copy(update={"outcome_code": "succeeded"})
    second = AttemptRecord(number=2, backend="docker", started_at=T0)

    one = with_attempt(Attempts(), first)
    replaced = with_attempt(one, done)
    two = with_attempt(replaced, second)

    assert one == Attempts(count=1, records=[first])
    assert replaced == Attempts(count=1, records=[done])
    assert two == Attempts(count=2, records=[done, second])


def test_applying_a_transition_appends_history_outbox_and_event_id() -> None:
    before = job(1)
    change = StatusChange(status=S.QUEUED, at=T0 + timedelta(seconds=1), event_id="e1")
    entry = OutboxEntry(event_id="o1", type="job.queued", created_at=T0)

    after = apply_transition(before, S.QUEUED, JobUpdate(priority=2), change=change, outbox=[entry])

    assert after.status is S.QUEUED
    assert after.priority == 2
    assert after.updated_at == change.at
    assert after.history == [*before.history, change]
    assert after.outbox == [entry]
    assert after.processed_event_ids == ["e1"]
    assert before.status is S.SUBMITTED  # the input is left alone


def test_applying_keeps_only_the_newest_event_ids() -> None:
    full = job(1, processed_event_ids=[f"e{n}" for n in range(PROCESSED_EVENTS_KEPT)])
    change = StatusChange(status=S.QUEUED, at=T0, event_id="newest")

    after = apply_transition(full, S.QUEUED, None, change=change, outbox=[])

    assert len(after.processed_event_ids) == PROCESSED_EVENTS_KEPT
    assert after.processed_event_ids[0] == "e1"
    assert after.processed_event_ids[-1] == "newest"


def test_the_mongo_document_keeps_dates_and_omits_a_missing_key() -> None:
    leased = job(1, lease=Lease(owner="w", expires_at=T0))

    doc = to_document(leased)

    assert doc["_id"] == "job-1"
    assert "job_id" not in doc
    assert "idempotency_key" not in doc
    assert doc["created_at"] == leased.created_at
    assert doc["lease"] == {"owner": "w", "expires_at": T0}
    assert doc["status"] == "submitted"
    assert from_document(doc) == leased


def test_the_mongo_transition_carries_its_precondition() -> None:
    record = AttemptRecord(number=2, backend="docker", started_at=T0)
    update = JobUpdate(attempt=record, lease=None)

    query = transition_filter("job-1", frozenset({S.QUEUED}), "e1", update)
    change = StatusChange(status=S.RUNNING, at=T0, event_id="e1")
    operators = transition_operators(S.RUNNING, update, change, [])

    assert query == {
        "_id": "job-1",
        "status": {"$in": ["queued"]},
        "processed_event_ids": {"$ne": "e1"},
        "attempts.count": {"$gte": 1},
    }
    assert operators["$set"]["status"] == "running"
    assert operators["$set"]["lease"] is None
    assert operators["$set"]["attempts.records.1"]["backend"] == "docker"
    assert operators["$max"] == {"attempts.count": 2}
    assert operators["$push"]["processed_event_ids"] == "e1"
    assert "outbox" not in operators["$push"]


def test_list_filters_match_between_the_two_stores() -> None:
    query = ListQuery(
        status=frozenset({S.RUNNING}), submitter="bob", scorer="rmse", created_from=T0
    )

    mongo = list_filter(query)
    where, params = list_where(query)

    assert mongo == {
        "status": {"$in": ["running"]},
        "submitter": "bob",
        "spec.scorer": "rmse",
        "created_at": {"$gte": T0},
    }
    assert where == "status IN (?) AND submitter = ? AND scorer = ? AND created_at >= ?"
    assert params == ["running", "bob", "rmse", timestamp(T0)]


def test_sqlite_timestamps_sort_as_text() -> None:
    times = [
        T0,
        T0 + timedelta(microseconds=1),
        T0 + timedelta(seconds=1),
        T0 + timedelta(days=400),
    ]

    assert sorted(timestamp(t) for t in times) == [timestamp(t) for t in times]
    assert len({len(timestamp(t)) for t in times}) == 1


def test_sqlite_columns_come_from_the_document() -> None:
    leased = job(1, lease=Lease(owner="w", expires_at=T0), idempotency_key="k")

    row = row_of(leased)

    assert row[:6] == ("job-1", "submitted", "anonymous", "rmse", "/ws/1", "k")
    assert row[8] == timestamp(T0)
    assert row[9] == 0
