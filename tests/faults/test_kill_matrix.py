"""The reliability matrix: SIGKILL of each service at each step of a job, then a restart.

One stack per module (``fault_stack``: gateway, scheduler, executor and scorer as separate
processes on RabbitMQ, FerretDB and Docker). Each case submits one job (the classification
example; its run sleeps first and its scorer, ``slow_f1``, pauses, so every step lasts long enough
to be hit), waits on the tap for the step, SIGKILLs the service, starts it again, and checks the
promise of docs/RELIABILITY.md: the job succeeds, once — one terminal state in its history, one
``score.completed`` event id on the bus, one webhook delivery carrying it — and no container of
the job is left on the engine.

The steps, and what marks them on the bus:

| step | killed when |
|---|---|
| accepted | right after ``POST /v1/jobs`` answered 202 |
| queued | ``run.requested.docker`` published (the scheduler queued attempt 1) |
| running | ``run.started`` + 0.5 s (the container is running) |
| run_completed | ``run.completed`` published, before the scheduler moved the job on |
| scoring | ``score.requested`` + 0.6 s (the scorer is inside ``slow_f1``) |
| scored | ``score.completed`` published, before the webhook went out |
"""

from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest

from tests.faults.harness import (
    Api,
    FaultStack,
    Tap,
    check_ended_once,
    leftover_containers,
    queue_counts,
    stack_queue_names,
    wait_webhook,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo, pytest.mark.docker, pytest.mark.slow]

SERVICES = ("gateway", "scheduler", "executor", "scorer")
STEPS: dict[str, tuple[str | None, float]] = {
    "accepted": (None, 0.0),
    "queued": ("run.requested", 0.0),
    "running": ("run.started", 0.5),
    "run_completed": ("run.completed", 0.0),
    "scoring": ("score.requested", 0.6),
    "scored": ("score.completed", 0.0),
}

# cases that fail on a platform defect another helper owns: (service, step) -> reason
KNOWN: dict[tuple[str, str], str] = {}


def _cases() -> list[pytest.param]:  # type: ignore[valid-type]
    cases = []
    for service in SERVICES:
        for step in STEPS:
            marks = []
            if (service, step) in KNOWN:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[service, step]))
            cases.append(pytest.param(service, step, id=f"{service}-{step}", marks=marks))
    return cases


@pytest.mark.parametrize(("service", "step"), _cases())
async def test_sigkill_at_each_step_ends_the_job_once(
    fault_stack: FaultStack, api: Api, tap: Tap, service: str, step: str
) -> None:
    workspace = fault_stack.add_workspace(sleep_s=2)
    job_id = await api.submit(workspace)
    key, after = STEPS[step]
    if key is not None:
        await tap.wait_for(job_id, key, timeout=90)
    await asyncio.sleep(after)
    await fault_stack.restart(service)

    job = await api.wait_terminal(job_id, timeout=150)
    await wait_webhook(fault_stack.receiver, job)
    assert job["status"] == "succeeded", (job["error"], fault_stack.log_tail(service))
    assert 0.5 < job["result"]["summary"]["f1_macro"] < 1.0
    problems = check_ended_once(job, tap, fault_stack.receiver)
    assert not problems, (problems, job["history"], job["attempts"])
    assert await leftover_containers(job_id) == []


# --- poison messages ----------------------------------------------------------------------------

POISON = {
    "garbage bytes": b"\x00\xff\xfe not json \x80",
    "JSON of the wrong type": b"[1, 2, 3]",
    "an unknown event type": json.dumps(
        {
            "type": "job.exploded",
            "event_id": "7d4c8b8e-0f5e-4c1e-9a53-1f1f8d1c2b3a",
            "schema_version": 1,
            "occurred_at": "2026-11-29T18:00:00+00:00",
            "job_id": "job-poison",
        }
    ).encode(),
}


async def test_poison_on_every_queue_is_dead_lettered_and_consumption_goes_on(
    fault_stack: FaultStack, api: Api, tap: Tap
) -> None:
    """Garbage, JSON of the wrong type and an unknown event type, straight into each queue a
    service consumes (the default exchange routes by queue name): each lands in that queue's
    ``.dlq``, no service dies, and a job submitted afterwards goes through all four."""
    url = fault_stack.settings.bus.url.get_secret_value()
    names = await stack_queue_names(fault_stack.prefix)
    consumed = [n for n in names if not n.endswith(".dlq") and ".retry." not in n]
    assert {fault_stack.queue_of(s) for s in SERVICES} <= set(consumed), consumed
    before = await queue_counts(url, [f"{n}.dlq" for n in consumed], patience=90)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for queue in consumed:
            for body in POISON.values():
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue,
                )
    expected = {f"{n}.dlq": before[f"{n}.dlq"][0] + len(POISON) for n in consumed}
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        counts = {n: c[0] for n, c in (await queue_counts(url, expected, patience=90)).items()}
        if counts == expected or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert counts == expected, "dead letters per queue"
    assert all(fault_stack.alive(s) for s in SERVICES)

    job_id = await api.submit(fault_stack.add_workspace())
    job = await api.wait_terminal(job_id, timeout=120)
    await wait_webhook(fault_stack.receiver, job)
    assert job["status"] == "succeeded", job["error"]
    assert not check_ended_once(job, tap, fault_stack.receiver)


@pytest.mark.parametrize("service", SERVICES)
async def test_sigkill_on_the_failure_path_ends_the_job_once(
    fault_stack: FaultStack, api: Api, tap: Tap, service: str
) -> None:
    """A participant that exits 1 fails its job: a kill of any service as the failing
    ``RunCompleted`` is published still gives one ``failed``, one ``job.failed``, one webhook."""
    job_id = await api.submit(fault_stack.add_workspace(sleep_s=1, exit_code=1))
    await tap.wait_for(job_id, "run.completed", timeout=90)
    await fault_stack.restart(service)

    job = await api.wait_terminal(job_id, timeout=150)
    await wait_webhook(fault_stack.receiver, job)
    assert job["status"] == "failed", job
    assert job["error"]["fault"] == "participant", job["error"]
    problems = check_ended_once(job, tap, fault_stack.receiver)
    assert not problems, (problems, job["history"])
