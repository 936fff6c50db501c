"""The job document and its state machine."""

from __future__ import annotations

import pytest

from shared.errors import ErrorCode, Stage
from shared.jobs import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    IllegalTransitionError,
    Job,
    JobStatus,
    can_transition,
    check_transition,
    new_job,
    now_ms,
)
from shared.models import JobSpec

S = JobStatus


def test_every_state_has_a_row_in_the_transition_table() -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    assert set(JobStatus) == ACTIVE_STATES | TERMINAL_STATES
    assert not ACTIVE_STATES & TERMINAL_STATES


@pytest.mark.parametrize(
    ("from_state", "to_state"),
    [
        (S.SUBMITTED, S.QUEUED),
        (S.QUEUED, S.RUNNING),
        (S.RUNNING, S.SCORING),
        (S.SCORING, S.SUCCEEDED),
        (S.SCORING, S.FAILED),
        (S.RUNNING, S.QUEUED),  # retry after a platform failure
        (S.SUCCEEDED, S.SCORING),  # re-score
        (S.FAILED, S.SCORING),  # re-score
        (S.QUEUED, S.CANCELLED),
        (S.RUNNING, S.CANCELLED),
    ],
)
def test_the_life_cycle_moves_are_allowed(from_state: JobStatus, to_state: JobStatus) -> None:
    assert can_transition(from_state, to_state)


@pytest.mark.parametrize(
    ("from_state", "to_state"),
    [
        (S.SUBMITTED, S.RUNNING),  # skipping the queue
        (S.SUBMITTED, S.SUCCEEDED),
        (S.QUEUED, S.SCORING),
        (S.SCORING, S.RUNNING),
        (S.SUCCEEDED, S.FAILED),
        (S.SUCCEEDED, S.QUEUED),
        (S.RUNNING, S.RUNNING),
    ],
)
def test_other_moves_are_not(from_state: JobStatus, to_state: JobStatus) -> None:
    assert not can_transition(from_state, to_state)


def test_a_cancelled_job_never_moves_again() -> None:
    assert not TRANSITIONS[S.CANCELLED]


def test_check_transition_names_the_offending_state() -> None:
    check_transition(frozenset({S.SUCCEEDED, S.FAILED}), S.SCORING)

    with pytest.raises(IllegalTransitionError) as caught:
        check_transition(frozenset({S.RUNNING, S.CANCELLED}), S.QUEUED)

    error = caught.value
    assert error.code is ErrorCode.INTERNAL_ERROR
    assert error.stage is Stage.PLATFORM
    assert not error.retryable
    assert error.details == {"from": "cancelled", "to": "queued"}
    assert "cancelled -> queued" in error.message


def test_states_are_plain_strings_on_the_wire() -> None:
    assert S.SCORING == "scoring"
    assert S("running") is S.RUNNING


def test_now_ms_keeps_only_milliseconds() -> None:
    assert now_ms().microsecond % 1000 == 0
    assert now_ms().utcoffset() is not None


def test_a_new_job_starts_submitted_with_one_history_entry() -> None:
    spec = JobSpec(job_id="job-a", scorer="classification")

    job = new_job(spec, workspace="/ws/a", submitter="alice", idempotency_key="k")

    assert job.job_id == "job-a"
    assert job.status is S.SUBMITTED
    assert [h.status for h in job.history] == [S.SUBMITTED]
    assert job.history[0].at == job.created_at == job.updated_at
    assert job.attempts.count == 0
    assert job.lease is None
    assert job.outbox == []
    assert job.processed_event_ids == []
    assert job.scorer == "classification"
    assert job.active


def test_a_job_document_survives_json() -> None:
    job = new_job(JobSpec(job_id="job-b", scorer="rmse"), workspace="/ws/b")

    assert Job.model_validate_json(job.model_dump_json()) == job
