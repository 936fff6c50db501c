"""Duplicate deliveries and racing transitions on the real stack (``fault_stack``).

* Every ``JobSubmitted``, ``RunCompleted`` and ``ScoreCompleted`` of a job published again, byte
  for byte (same ``event_id``), as soon as it shows on the tap: one run, one scoring, one
  terminal state, one terminal event, one webhook.
* A second ``RunCompleted`` for the same attempt under a new ``event_id`` (a request run twice by
  two replicas): the scheduler keeps the first (docs/SERVICES.md, attempt start and end ids).
* A cancel racing the job at each step: whichever wins, the job ends once.
* Two re-scores of a finished job at once: one more scoring round, not two.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.faults.harness import (
    Api,
    FaultStack,
    Tap,
    Tapped,
    check_ended_once,
    wait_webhook,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo, pytest.mark.docker, pytest.mark.slow]

PATH = ["submitted", "queued", "running", "scoring", "succeeded"]


def _distinct(tap: Tap, job_id: str, key: str) -> int:
    return len({t.event.get("event_id") for t in tap.of_job(job_id, key)})


async def test_duplicate_publishes_have_one_effect(
    fault_stack: FaultStack, api: Api, tap: Tap
) -> None:
    job_id = await api.submit(fault_stack.add_workspace(sleep_s=1))
    for key in ("job.submitted", "run.completed", "score.completed"):
        original = await tap.wait_for(job_id, key, timeout=90)
        for _ in range(2):
            await tap.publish_raw(original)
    job = await api.wait_terminal(job_id)
    await wait_webhook(fault_stack.receiver, job, settle=3.0)

    assert job["status"] == "succeeded", job["error"]
    assert [h["status"] for h in job["history"]] == PATH
    assert job["attempts"]["count"] == 1
    for key in ("run.requested", "run.started", "score.requested"):
        assert _distinct(tap, job_id, key) == 1, key
    assert not check_ended_once(job, tap, fault_stack.receiver)


async def test_a_second_run_completed_under_a_new_event_id_is_ignored(
    fault_stack: FaultStack, api: Api, tap: Tap
) -> None:
    job_id = await api.submit(fault_stack.add_workspace(sleep_s=1))
    original = await tap.wait_for(job_id, "run.completed", timeout=90)
    event = original.event
    event["event_id"] = str(uuid.uuid4())
    event["outcome"]["duration_s"] = 999.0  # a different story: it must not be told
    twin = Tapped(original.routing_key, json.dumps(event).encode(), event["event_id"])
    await tap.publish_raw(twin)
    job = await api.wait_terminal(job_id)
    await wait_webhook(fault_stack.receiver, job, settle=2.0)

    assert job["status"] == "succeeded", job["error"]
    assert job["run_outcome"]["duration_s"] != 999.0
    assert [h["status"] for h in job["history"]] == PATH
    assert _distinct(tap, job_id, "score.requested") == 1
    assert not check_ended_once(job, tap, fault_stack.receiver)


@pytest.mark.parametrize(
    "step", ["job.submitted", "run.started", "run.completed", "score.requested"]
)
async def test_a_cancel_racing_each_step_ends_the_job_once(
    fault_stack: FaultStack, api: Api, tap: Tap, step: str
) -> None:
    job_id = await api.submit(fault_stack.add_workspace(sleep_s=1))
    await tap.wait_for(job_id, step, timeout=90)
    status, body = await api.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert status in (202, 409), body  # 409: it finished first
    job = await api.wait_terminal(job_id)
    await wait_webhook(fault_stack.receiver, job, settle=2.0)

    assert job["status"] in ("cancelled", "succeeded"), (job["status"], job["error"])
    assert not check_ended_once(job, tap, fault_stack.receiver)


async def test_two_rescores_racing_make_one_more_scoring_round(
    fault_stack: FaultStack, api: Api, tap: Tap
) -> None:
    job_id = await api.submit(fault_stack.add_workspace())
    first = await api.wait_terminal(job_id)
    assert first["status"] == "succeeded", first["error"]
    answers = await asyncio.gather(
        api.request("POST", f"/v1/jobs/{job_id}/rescore?reason=a"),
        api.request("POST", f"/v1/jobs/{job_id}/rescore?reason=b"),
    )
    assert [status for status, _ in answers].count(202) >= 1, answers
    await asyncio.sleep(0.5)
    job = await api.wait_terminal(job_id)
    await asyncio.sleep(3.0)  # room for a second round to show
    job = await api.job(job_id)

    assert job["status"] == "succeeded", job["error"]
    ends = [h["status"] for h in job["history"] if h["status"] in ("succeeded", "failed")]
    assert ends == ["succeeded", "succeeded"], job["history"]
    assert _distinct(tap, job_id, "score.requested") == 2
    assert _distinct(tap, job_id, "score.completed") == 2
