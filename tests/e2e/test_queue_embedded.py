"""Where is my job, on the whole platform in one process (scheduler, local executor with one
run slot, scorer, gateway), on the in-memory bus and SQLite and on RabbitMQ and FerretDB: jobs
submitted while another runs queue up in order, their estimate appears once a run has finished
on the backend, and GET /v1/queue counts them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from tests.e2e.harness import Platform, raw_settings, running_platform


def gated_workspace(platform: Platform, name: str, gates: Path) -> str:
    """A classification workspace whose run waits until the test creates ``gates/<name>``, then
    takes 2 s more: which jobs are still queued, and whether a run has finished, is then up to
    the test, not to how fast the machine is."""
    platform.add_workspace("classification", name)
    meta = Path(platform.settings.gateway.data_root) / name / "meta.json"
    spec = json.loads(meta.read_text())
    gate = gates / name
    wait = f"until [ -e {gate} ]; do sleep 0.05; done"
    spec["container"]["cmd"] = ["sh", "-c", f"{wait}; sleep 2 && python3 submission/predict.py"]
    meta.write_text(json.dumps(spec))
    return name


def release(gates: Path, name: str) -> None:
    (gates / name).touch()


async def until(platform: Platform, job_id: str, *status: str, timeout: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await platform.call("GET", f"/v1/jobs/{job_id}")
        if job["status"] in status:
            return job
        assert asyncio.get_running_loop().time() < deadline, f"{job_id} still {job['status']}"
        await asyncio.sleep(0.1)


REAL = pytest.param("real", marks=[pytest.mark.rabbitmq, pytest.mark.mongo])


@pytest.mark.slow
@pytest.mark.parametrize("parts", ["embedded", REAL])
async def test_queued_jobs_see_their_place_and_an_estimate_after_a_run(
    tmp_path: Path, parts: str, rabbit_url: str, mongo_url: str
) -> None:
    """``embedded``: memory bus and SQLite; ``real``: RabbitMQ and FerretDB."""
    real = parts == "real"
    raw = raw_settings(
        tmp_path,
        bus="rabbitmq" if real else "memory",
        store="mongo" if real else "sqlite",
        rabbit_url=rabbit_url if real else "",
        mongo_url=mongo_url if real else "",
    )
    raw["executor_service"]["concurrency"] = 1
    raw["gateway"]["queue_run_slots"] = {"local": 1}
    gates = tmp_path / "gates"
    gates.mkdir()
    async with running_platform(Settings.model_validate(raw)) as platform:
        first = await platform.submit(gated_workspace(platform, "a", gates))
        await until(platform, first, "running")
        later = {
            await platform.submit(gated_workspace(platform, name, gates)): name
            for name in ("b", "c")
        }
        queued = [await until(platform, job_id, "queued") for job_id in later]
        # Two submissions close together may be queued in either order (the scheduler handles
        # them concurrently); the executor queue runs them in the order they were queued.
        queued.sort(key=lambda job: (job["queued_at"], job["job_id"]))
        assert [(j["queue"]["position"], j["queue"]["backend"]) for j in queued] == [
            (0, "local"),
            (1, "local"),
        ]
        assert queued[1]["queue"]["estimated_start_at"] is None  # nothing has finished yet
        overview = await platform.call("GET", "/v1/queue")
        local = {row["backend"]: row for row in overview["backends"]}["local"]
        assert (local["depth"], local["running"]) == (2, 1)
        assert local["oldest_queued_age_s"] >= 0

        release(gates, "a")
        following, last_id = (job["job_id"] for job in queued)
        await until(platform, following, "running")
        await until(platform, first, "scoring", "succeeded")  # its run is recorded as finished
        last = (await until(platform, last_id, "queued"))["queue"]
        assert last["position"] == 0
        assert last["estimated_from"]["recent_runs"] == 1
        assert last["estimated_from"]["median_run_seconds"] >= 2.0
        assert last["estimated_start_at"] is not None
        for name in later.values():
            release(gates, name)
        for job_id in (first, *later):
            assert (await platform.wait(job_id))["status"] == "succeeded"
