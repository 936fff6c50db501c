"""The store goes away mid-flow: a FerretDB of the test's own (``private_ferretdb``) is killed for
a few seconds while jobs are at every step, then started again on the same data. Every job
completes, once; none is lost, no service dies, and nothing is left in a queue."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.faults.conftest import PrivateFerretDB
from tests.faults.harness import (
    Api,
    MakeStack,
    Tap,
    check_ended_once,
    queue_counts,
    stack_queue_names,
    wait_webhook,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo, pytest.mark.docker, pytest.mark.slow]

JOBS = 4
OUTAGE_S = 5.0


async def test_jobs_flowing_through_a_store_outage_all_complete_once(
    private_ferretdb: PrivateFerretDB, make_stack: MakeStack
) -> None:
    # the server first, so it outlives the stack's teardown (which drops the test's database)
    def on_private_store(raw: dict[str, Any]) -> None:
        raw["store"]["url"] = private_ferretdb.url

    stack = await make_stack(tweak=on_private_store)
    url = stack.settings.bus.url.get_secret_value()
    async with (
        aiohttp.ClientSession() as session,
        Tap(url, stack.settings.bus.exchange) as tap,
    ):
        api = Api(session, stack.url)
        jobs = []
        for n in range(JOBS):  # staggered: queued, running and scoring when the store goes
            jobs.append(await api.submit(stack.add_workspace(sleep_s=1 + n)))
            await asyncio.sleep(0.7)
        await tap.wait_for(jobs[0], "run.started", timeout=90)
        private_ferretdb.stop()
        outage_ends = asyncio.get_running_loop().time() + OUTAGE_S
        readiness = []  # docs/API.md: /readyz answers 503 while the store does not answer
        while asyncio.get_running_loop().time() < outage_ends:
            async with session.get(stack.url + "/readyz") as resp:
                readiness.append(resp.status)
            await asyncio.sleep(0.5)
        private_ferretdb.start()
        assert 503 in readiness, readiness

        done = [await api.wait_terminal(job_id, timeout=240) for job_id in jobs]
        for job in done:
            await wait_webhook(stack.receiver, job)
        assert [j["status"] for j in done] == ["succeeded"] * JOBS, [j["error"] for j in done]
        problems = [p for job in done for p in check_ended_once(job, tap, stack.receiver)]
        assert not problems, problems
        assert all(stack.alive(s) for s in ("gateway", "scheduler", "executor", "scorer"))
        names = await stack_queue_names(stack.prefix)
        left = {n: c[0] for n, c in (await queue_counts(url, names, patience=90)).items() if c[0]}
        assert left == {}, left
