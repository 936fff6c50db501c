"""Event contracts: round trips, routing keys, junk rejection, forward compatibility."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import (
    EVENT_TYPES,
    KNOWN_TYPES,
    BaseEvent,
    CancelRequested,
    JobCancelled,
    JobFailed,
    JobSubmitted,
    RescoreRequested,
    RunCompleted,
    RunHeartbeat,
    RunRequested,
    RunStarted,
    ScoreCompleted,
    ScoreRequested,
    ScorerLoadCompleted,
    ScorerLoadRequested,
    ScorersAnnounced,
    ScorersChanged,
    ScorersWanted,
    ScorerTestCompleted,
    ScorerTestRequested,
    encode_event,
    parse_event,
)
from shared.models import JobSpec, Result, RunOutcome
from shared.scoring import ScorerInfo

SPEC = JobSpec(job_id="job-42", scorer="classification", params={"average": "macro"})
ERROR = AutoscorerError(ErrorCode.CONTAINER_OOM, "out of memory", stage=Stage.EXECUTION).to_info()

SAMPLES: list[BaseEvent] = [
    JobSubmitted(
        job_id="job-42",
        spec=SPEC,
        workspace="s3://bucket/ws/job-42",
        submitter="alice",
        priority=7,
        idempotency_key="upload-1",
        callback_url="https://example.org/hook",
    ),
    RunRequested(job_id="job-42", spec=SPEC, workspace="/ws/job-42", backend="docker", attempt=2),
    RunStarted(job_id="job-42", backend="docker", attempt=2, instance="executor-1", lease_ttl_s=30),
    RunHeartbeat(
        job_id="job-42", backend="docker", attempt=2, instance="executor-1", elapsed_s=3.5
    ),
    RunCompleted(
        job_id="job-42",
        outcome=RunOutcome(job_id="job-42", backend="docker", status="failed", error=ERROR),
    ),
    ScoreRequested(job_id="job-42", spec=SPEC, workspace="/ws/job-42"),
    ScoreCompleted(
        job_id="job-42",
        result=Result(summary={"accuracy": 0.9}, metrics={"f1": {"a": 0.5}}),
        scorer="classification",
        scorer_version="1.2.0",
    ),
    JobFailed(job_id="job-42", error=ERROR, attempt=1),
    CancelRequested(job_id="job-42", requested_by="bob", reason="wrong file"),
    JobCancelled(job_id="job-42", reason="wrong file", stage=Stage.EXECUTION),
    ScorersChanged(
        action="loaded",
        scorer="my_metric",
        scorer_version="3",
        source="def score(): ...",
        sha256="0" * 64,
        origin="scorer-1",
    ),
    RescoreRequested(job_id="job-42", requested_by="organiser", reason="scorer fixed"),
    ScorerTestRequested(
        scorer="my_metric",
        workspace="/data/comp1/sub42",
        plugins=[("/data/scorers/my_metric.py", "0" * 64)],
        reply_to="gateway-1",
    ),
    ScorerTestCompleted(
        request_id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        reply_to="gateway-1",
        result=Result(summary={"value": 1.0}),
    ),
    ScorersAnnounced(
        origin="scorer-1",
        scorers=[
            ScorerInfo(
                name="my_metric",
                version="1.0.0",
                task_type="custom",
                description="d",
                expected_files=("predictions.csv",),
                primary_metric="value",
                params_schema={"type": "object"},
                source_sha256="0" * 64,
            )
        ],
        errors={"file:/data/scorers/broken.py": ERROR},
    ),
    ScorersWanted(origin="gateway-1"),
    ScorerLoadRequested(filename="my_metric.py", source="x = 1\n", reply_to="gateway-1"),
    ScorerLoadCompleted(
        request_id=uuid.UUID("00000000-0000-4000-8000-000000000002"),
        reply_to="gateway-1",
        error=ERROR,
    ),
]

ROUTING_KEYS = {
    RunRequested: "run.requested.docker",
    ScorerTestCompleted: "scorer.test.completed.gateway-1",
    ScorerLoadCompleted: "scorer.load.completed.gateway-1",
}


def test_samples_cover_every_event_type() -> None:
    assert {type(e) for e in SAMPLES} == set(EVENT_TYPES)
    assert {e.type for e in SAMPLES} == KNOWN_TYPES


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_every_event_survives_the_wire(event: BaseEvent) -> None:
    parsed = parse_event(encode_event(event))

    assert parsed == event
    assert type(parsed) is type(event)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_routing_key_is_the_type_except_for_run_requests_and_replies(event: BaseEvent) -> None:
    expected = ROUTING_KEYS.get(type(event), event.type)

    assert event.routing_key == expected


def test_common_fields_are_filled_in() -> None:
    first, second = SAMPLES[0], JobSubmitted.model_validate(SAMPLES[0].model_dump())

    assert isinstance(first.event_id, uuid.UUID)
    assert first.occurred_at.tzinfo is not None
    assert first.schema_version == 1
    assert second.event_id == first.event_id


def test_events_are_frozen() -> None:
    with pytest.raises(ValidationError):
        SAMPLES[0].job_id = "other"  # type: ignore[misc]


def test_unknown_fields_from_newer_producers_are_ignored() -> None:
    data = json.loads(encode_event(SAMPLES[7]))
    data["added_in_v2"] = {"anything": True}

    assert parse_event(json.dumps(data)) == SAMPLES[7]


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (b"\xff\xfe", ErrorCode.PARSE_ERROR, "not JSON"),
        (b"{truncated", ErrorCode.PARSE_ERROR, "not JSON"),
        (b"[1, 2]", ErrorCode.BAD_FORMAT, "JSON object"),
        (
            b'{"type": "job.exploded", "event_id": "x", "occurred_at": "x"}',
            ErrorCode.BAD_FORMAT,
            "unknown event type",
        ),
        (b'{"type": "job.failed", "job_id": "j"}', ErrorCode.BAD_FORMAT, "event_id"),
    ],
)
def test_junk_raises_a_classified_error(body: bytes, code: ErrorCode, fragment: str) -> None:
    with pytest.raises(AutoscorerError) as caught:
        parse_event(body)

    assert caught.value.code is code
    assert fragment in caught.value.message
    assert not caught.value.retryable


def test_invalid_fields_are_listed_in_the_error_details() -> None:
    data = json.loads(encode_event(SAMPLES[0]))
    data["priority"] = 99
    del data["submitter"]

    with pytest.raises(AutoscorerError) as caught:
        parse_event(json.dumps(data).encode())

    assert caught.value.code is ErrorCode.BAD_FORMAT
    assert {e["loc"] for e in caught.value.details["errors"]} == {
        "job.submitted.priority",
        "job.submitted.submitter",
    }


def test_job_id_must_match_the_spec() -> None:
    with pytest.raises(ValidationError, match=r"spec\.job_id"):
        JobSubmitted(job_id="job-1", spec=SPEC, workspace="/ws", submitter="alice")


def test_backend_alias_cannot_break_the_routing_key() -> None:
    with pytest.raises(ValidationError):
        RunRequested(job_id="job-42", spec=SPEC, workspace="/ws", backend="docker.gpu")


def test_loaded_scorer_needs_its_source() -> None:
    with pytest.raises(ValidationError, match="source"):
        ScorersChanged(action="reloaded", scorer="m", scorer_version="1", origin="r1")
    removed = ScorersChanged(action="removed", scorer="m", scorer_version="1", origin="r1")
    assert removed.job_id is None
    assert removed.routing_key == "scorers.changed"


def test_callback_url_must_be_http() -> None:
    with pytest.raises(ValidationError):
        JobSubmitted(
            job_id="job-42",
            spec=SPEC,
            workspace="/ws",
            submitter="alice",
            callback_url="file:///etc/passwd",
        )
