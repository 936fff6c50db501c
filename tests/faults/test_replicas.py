"""Two replicas of every service on one RabbitMQ and one store, one replica of each killed.

The stack of ``tests/faults/harness.FaultStack`` with a second process of the gateway,
scheduler, executor (Docker) and scorer: the second ones read a config that differs only where
replicas must (the gateway's port, the executor's and scorer's replica ids), so both consume the
same queues and share the database. Jobs are submitted through both gateways; while they run,
the executor replica holding a run, one scorer, one scheduler and one gateway are SIGKILLed and
not started again. Every job must still end ``succeeded`` exactly once: one terminal state, one
``ScoreCompleted`` event id on the bus, one webhook delivery (the gateways share the delivery
queue), one scoring round, one attempt that ran to the end (an attempt whose executor died, or
whose lease ran out on this loaded machine, ends as a platform failure and is retried).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.e2e.harness import free_port
from tests.faults.harness import (
    SERVICES,
    Api,
    FaultStack,
    Tap,
    check_ended_once,
    wait_webhook,
)

SECOND = ".2"  # the suffix of a second replica's process name
JOBS = 10

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo, pytest.mark.docker, pytest.mark.slow]


@dataclass
class ReplicaStack(FaultStack):
    """``<service>`` runs on the stack's config, ``<service>.2`` on the second one."""

    second_config: Path | None = None
    second_url: str = ""

    @classmethod
    def replicated(cls, root: Path, rabbit_url: str, mongo_url: str) -> ReplicaStack:
        stack = cls.create(root, rabbit_url, mongo_url)
        assert isinstance(stack, ReplicaStack)
        raw = yaml.safe_load(stack.config_file.read_text())
        raw["gateway"]["port"] = free_port()
        raw["executor_service"]["replica_id"] += "-2"
        raw["scorer"]["replica_id"] += "-2"
        stack.second_config = root / "stack2.yaml"
        stack.second_config.write_text(yaml.safe_dump(raw))
        stack.second_url = f"http://127.0.0.1:{raw['gateway']['port']}"
        return stack

    def config_of(self, service: str) -> Path:
        if service.endswith(SECOND) and self.second_config is not None:
            return self.second_config
        return super().config_of(service)

    def queue_of(self, service: str) -> str:
        return super().queue_of(service.removesuffix(SECOND))

    async def start_both(self) -> None:
        """Both replicas of each service, consumers first; the webhook through gateway one."""
        await self.start()
        for service in SERVICES:
            self.spawn(service + SECOND)
        for service in SERVICES:
            await self.wait_consumers(self.queue_of(service), 2, service + SECOND)
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                status, _ = await Api(session, self.second_url).request("GET", "/v1/jobs")
                if status == 200:
                    break
                assert time.monotonic() < deadline, self.log_tail("gateway" + SECOND)
                await asyncio.sleep(0.3)

    async def wait_consumers(self, queue: str, count: int, service: str) -> None:
        deadline = time.monotonic() + 90
        while await self.consumers(queue) < count:
            assert self.alive(service), self.log_tail(service)
            assert time.monotonic() < deadline, f"{service} idle:\n{self.log_tail(service)}"
            await asyncio.sleep(0.2)


@pytest.fixture
async def replicas(tmp_path: Path, rabbit_url: str, mongo_url: str, example_image: str) -> Any:
    stack = ReplicaStack.replicated(tmp_path / "stack", rabbit_url, mongo_url)
    try:
        await stack.start_both()
        yield stack
    finally:
        stack.stop_all()
        stack.receiver.stop()
        await stack.remove_topology()


async def test_two_replicas_of_each_service_end_every_job_once_when_one_of_each_dies(
    replicas: ReplicaStack,
) -> None:
    settings = replicas.settings
    async with (
        Tap(settings.bus.url.get_secret_value(), settings.bus.exchange) as tap,
        aiohttp.ClientSession() as session,
    ):
        gateways = [Api(session, replicas.url), Api(session, replicas.second_url)]
        jobs = [
            await gateways[n % 2].submit(replicas.add_workspace(sleep_s=2)) for n in range(JOBS)
        ]
        replicas.kill("gateway" + SECOND)
        replicas.kill("scheduler" + SECOND)
        started = (await tap.wait_for(jobs[0], "run.started", timeout=120)).event
        holder = "executor" + (SECOND if started["instance"].endswith("-2") else "")
        replicas.kill(holder)
        await tap.wait_for(jobs[-1], "score.requested", timeout=180)
        replicas.kill("scorer" + SECOND)

        ended = [await gateways[0].wait_terminal(job_id, timeout=240) for job_id in jobs]
        for job in ended:
            await wait_webhook(replicas.receiver, job, settle=0.2)
        await asyncio.sleep(2.0)  # room for a duplicate delivery to show

    problems = [p for job in ended for p in check_ended_once(job, tap, replicas.receiver)]
    assert not problems, problems
    assert [job["status"] for job in ended] == ["succeeded"] * JOBS, [
        (job["job_id"], job["error"]) for job in ended
    ]
    for job in ended:
        scorings = [h for h in job["history"] if h["status"] == "scoring"]
        ran = [r for r in job["attempts"]["records"] if r["outcome_code"] == "succeeded"]
        assert len(scorings) == 1, job["history"]
        assert len(ran) == 1, job["attempts"]  # an earlier attempt may have lost its executor
