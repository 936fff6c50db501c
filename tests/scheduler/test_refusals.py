"""The JobSubmitted schema and model agree, and a refused JobSubmitted is answered with JobFailed
on the bus, not only a dead letter (issue 7, class 10). Memory bus + SQLite store."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import jsonschema_rs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.bus_memory import MemoryBus
from shared.errors import ErrorCode, Stage
from shared.events import JobFailed, JobSubmitted, derived_event_id, parse_event
from shared.jobs import JobStatus, new_job
from tests.scheduler.fakes import eventually
from tests.scheduler.rig import Rig, submitted

S = JobStatus
SCHEMA = jsonschema_rs.validator_for(JobSubmitted.model_json_schema())


def body(job_id: str = "job-raw", **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "job.submitted",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-01-01T00:00:00Z",
        "job_id": job_id,
        "spec": {"scorer": "classification", "container": {"image": "participant:latest"}},
        "workspace": f"/ws/{job_id}",
        "submitter": "platform",
    }
    event.update(changes)
    return event


job_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,40}\Z")
specs = st.fixed_dictionaries(
    {"scorer": st.sampled_from(["classification", "f1"])},
    optional={
        "time_limit": st.integers(1, 3600),
        "params": st.dictionaries(
            st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), max_size=3
        ),
        "task_type": st.text(max_size=20),
    },
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(job_id=job_ids, spec=specs, spec_names_job=st.booleans(), priority=st.integers(0, 9))
def test_a_schema_valid_job_submitted_is_accepted_by_the_model(
    job_id: str, spec: dict[str, Any], spec_names_job: bool, priority: int
) -> None:
    if spec_names_job:
        spec = {**spec, "job_id": job_id}
    event = body(job_id, spec=spec, priority=priority)
    assert SCHEMA.is_valid(event)

    parsed = parse_event(json.dumps(event))

    assert isinstance(parsed, JobSubmitted) and parsed.spec.job_id == job_id


async def test_a_job_submitted_without_spec_job_id_runs(rig: Rig, bus: MemoryBus) -> None:
    await bus.publish_raw("job.submitted", json.dumps(body("job-nospecid")).encode())

    await rig.wait_status("job-nospecid", S.SUCCEEDED)


async def test_an_invalid_job_submitted_is_answered_with_job_failed_and_dead_lettered(
    rig: Rig, bus: MemoryBus
) -> None:
    bad = body("job-badspec", spec={"scorer": "", "job_id": "job-badspec"})
    await bus.publish_raw("job.submitted", json.dumps(bad).encode())

    await eventually(lambda: rig.observer.of_type(JobFailed, "job-badspec"))
    [failed] = rig.observer.of_type(JobFailed, "job-badspec")
    assert isinstance(failed, JobFailed)
    queue = rig.scheduler.settings.queue
    await eventually(lambda: [d for d in bus.dead_letters if d.queue == queue])

    assert failed.event_id == derived_event_id(bad["event_id"], "job.failed")
    assert (failed.error.code, failed.error.stage) == (ErrorCode.BAD_FORMAT, Stage.VALIDATION)
    assert failed.error.details["dead_letter_queue"] == f"{queue}.dlq"
    assert await rig.store.get("job-badspec") is None


async def test_the_job_id_is_read_from_the_spec_when_the_event_has_none(
    rig: Rig, bus: MemoryBus
) -> None:
    bad = body("job-x", spec={"job_id": "job-fromspec", "scorer": "c", "bogus": 1})
    del bad["job_id"]
    await bus.publish_raw("job.submitted", json.dumps(bad).encode())

    await eventually(lambda: rig.observer.of_type(JobFailed, "job-fromspec"))


async def test_an_invalid_job_submitted_for_an_existing_job_only_dead_letters(
    rig: Rig, bus: MemoryBus
) -> None:
    event = submitted("job-exists")
    await rig.store.create(new_job(event.spec, workspace=event.workspace))
    bad = body("job-exists", workspace="")
    await bus.publish_raw("job.submitted", json.dumps(bad).encode())

    queue = rig.scheduler.settings.queue
    await eventually(lambda: [d for d in bus.dead_letters if d.queue == queue])
    assert rig.observer.of_type(JobFailed, "job-exists") == []


async def test_unreadable_bodies_are_only_dead_lettered(rig: Rig, bus: MemoryBus) -> None:
    for raw in (b"\xff{", b"[1]", b'{"type": "job.submitted", "job_id": "-bad-"}'):
        await bus.publish_raw("job.submitted", raw)

    queue = rig.scheduler.settings.queue
    await eventually(lambda: len([d for d in bus.dead_letters if d.queue == queue]) == 3)
    assert rig.observer.of_type(JobFailed) == []


async def test_a_callback_url_the_platform_would_not_call_is_refused(rig: Rig) -> None:
    event = submitted("job-badurl").model_copy(update={"callback_url": "http://[::1"})
    await rig.bus.publish(event)  # the model refuses it (shared.urls), so the bus dead-letters it

    await eventually(lambda: rig.observer.of_type(JobFailed, "job-badurl"))

    [failed] = rig.observer.of_type(JobFailed, "job-badurl")
    assert isinstance(failed, JobFailed)
    assert failed.error.code is ErrorCode.BAD_FORMAT
    assert "[::1" not in failed.error.message
    assert await rig.store.get("job-badurl") is None
    assert rig.executor.requests == []


async def test_a_spec_over_the_operators_caps_fails_the_job(rig: Rig) -> None:
    event = submitted("job-huge")
    resources = event.spec.resources.model_copy(update={"memory": "1000Ti"})
    spec = event.spec.model_copy(update={"resources": resources})
    await rig.bus.publish(event.model_copy(update={"spec": spec}))

    job = await rig.wait_status("job-huge", S.FAILED)
    await eventually(lambda: rig.observer.of_type(JobFailed, "job-huge"))

    assert job.error is not None and job.error.code is ErrorCode.RESOURCE_LIMIT_EXCEEDED
    assert rig.executor.requests == []
    await rig.bus.publish(event.model_copy(update={"spec": spec}))  # a duplicate: no new event
    await asyncio.sleep(0.3)
    assert len(rig.observer.of_type(JobFailed, "job-huge")) == 1
