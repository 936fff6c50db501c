"""Queue transparency: a queued job's place on its backend and start estimate in
GET /v1/jobs/{id} and ``autoscorer status``, and GET /v1/queue for admins. The gateway runs on
the embedded (SQLite) store; jobs are put in their states through the store, as the scheduler
does (tests/scheduler/test_queue_backend.py checks that it records the backend)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from services.cli.main import main as cli_main
from services.gateway.app import create_app
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from services.scorer.registry import ScorerRegistry
from shared.bus_memory import MemoryBus
from shared.config import ApiKey, GatewaySettings
from shared.jobs import AttemptRecord, Job, JobStatus, new_job, now_ms
from shared.models import JobSpec
from shared.store import JobUpdate
from shared.store_sqlite import SqliteJobStore

ADMIN, ALICE, BOB = "admin-key", "alice-key", "bob-key"
S = JobStatus


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Rig:
    def __init__(self, client: TestClient[Any, Any], store: SqliteJobStore) -> None:
        self.client, self.store = client, store
        self.count = 0

    async def job(
        self, *, on: str = "docker", priority: int = 5, age_s: float = 0.0, who: str = "alice"
    ) -> Job:
        """A queued job on ``on``, submitted ``age_s`` seconds ago."""
        self.count += 1
        job_id = f"q-{self.count:03d}"
        at = now_ms() - timedelta(seconds=age_s)
        job = new_job(JobSpec(job_id=job_id, scorer="classification_f1"), workspace=f"/ws/{job_id}")
        job = job.model_copy(
            update={"submitter": who, "priority": priority, "created_at": at, "updated_at": at}
        )
        await self.store.create(job)
        update = JobUpdate(backend=on, queued_at=at)
        moved = await self.store.transition(job_id, S.SUBMITTED, S.QUEUED, update)
        return moved.job

    async def ran(self, seconds: float, *, on: str = "docker") -> Job:
        """A job that ran ``seconds`` on ``on`` and succeeded."""
        job = await self.job(on=on)
        await self.store.transition(job.job_id, S.QUEUED, S.RUNNING)
        start = now_ms() - timedelta(seconds=seconds)
        record = AttemptRecord(number=1, backend=on, started_at=start, finished_at=now_ms())
        await self.store.transition(job.job_id, S.RUNNING, S.SCORING, JobUpdate(attempt=record))
        return (await self.store.transition(job.job_id, S.SCORING, S.SUCCEEDED)).job

    async def get(self, path: str, key: str = ADMIN) -> tuple[int, dict[str, Any]]:
        resp = await self.client.get(path, headers=_auth(key))
        return resp.status, await resp.json()

    async def queue_of(self, job: Job, key: str = ADMIN) -> dict[str, Any] | None:
        status, body = await self.get(f"/v1/jobs/{job.job_id}", key)
        assert status == 200, body
        queue: dict[str, Any] | None = body["data"].get("queue")
        return queue


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = GatewaySettings(
        data_root=tmp_path / "data",
        api_keys=[
            ApiKey(key=ADMIN, subject="ops", role="admin"),
            ApiKey(key=ALICE, subject="alice"),
            ApiKey(key=BOB, subject="bob"),
        ],
        queue_run_slots={"docker": 2},
    )
    bus, store = MemoryBus(), SqliteJobStore(tmp_path / "jobs.sqlite3")
    await bus.start()
    await store.init()
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    await hooks.init()
    app = create_app(settings, store, bus, ScorerRegistry.with_builtins().infos(), hooks)
    async with TestClient(TestServer(app)) as client:
        yield Rig(client, store)
    await bus.close()
    await store.close()


async def test_positions_count_the_jobs_queued_earlier_on_the_backend(rig: Rig) -> None:
    """First in, first out on each backend, whatever the priority (the executor queue's order:
    docs/OBSERVABILITY.md, "Where is my job?")."""
    high = await rig.job(priority=9, age_s=300)
    old = await rig.job(priority=5, age_s=200)
    new = await rig.job(priority=5, age_s=100)
    low = await rig.job(priority=1, age_s=10)
    k8s = await rig.job(on="kubernetes", priority=0, age_s=0, who="bob")
    running = await rig.job(priority=9, age_s=500)
    await rig.store.transition(running.job_id, S.QUEUED, S.RUNNING)

    queues = [await rig.queue_of(job) for job in (high, old, new, low)]
    assert [(q["position"], q["ahead"], q["backend"]) for q in queues if q] == [
        (0, 0, "docker"),
        (1, 1, "docker"),
        (2, 2, "docker"),
        (3, 3, "docker"),
    ]
    assert all(q and q["estimated_start_at"] is None for q in queues)  # no run history yet
    assert all(q and q["estimated_from"] is None for q in queues)
    assert (await rig.queue_of(k8s, BOB) or {}).get("position") == 0
    assert await rig.queue_of(running) is None  # only queued jobs have a place
    assert (await rig.queue_of(new, ALICE) or {}).get("position") == 2  # its submitter sees it
    status, body = await rig.get(f"/v1/jobs/{new.job_id}", BOB)
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


async def test_estimate_is_the_median_recent_run_times_the_waves_ahead(rig: Rig) -> None:
    for seconds in (10.0, 20.0, 60.0):
        await rig.ran(seconds)
    await rig.ran(500.0, on="kubernetes")  # another backend's runs do not count
    jobs = [await rig.job(age_s=40 - n) for n in range(4)]

    before = now_ms()
    last = await rig.queue_of(jobs[3])
    first = await rig.queue_of(jobs[0])
    after = now_ms()

    assert last is not None and first is not None and last["position"] == 3
    basis = last["estimated_from"]
    assert basis["recent_runs"] == 3 and basis["run_slots"] == 2
    assert basis["median_run_seconds"] == pytest.approx(20.0, abs=0.01)
    start = datetime.fromisoformat(last["estimated_start_at"])  # ceil(3 / 2) = 2 runs of 20 s
    slack = timedelta(milliseconds=50)
    assert before + timedelta(seconds=40) - slack <= start <= after + timedelta(seconds=40) + slack
    soon = datetime.fromisoformat(first["estimated_start_at"])  # next: starts when a slot frees
    assert before - slack <= soon <= after + slack


async def test_queue_overview_gives_depth_oldest_age_and_running_per_backend(rig: Rig) -> None:
    status, body = await rig.get("/v1/queue")
    assert status == 200 and body["data"] == {"backends": []}
    await rig.job(age_s=30)
    await rig.job(age_s=90)
    running = await rig.job(age_s=5)
    await rig.store.transition(running.job_id, S.QUEUED, S.RUNNING)
    await rig.job(on="kubernetes", age_s=10)
    await rig.ran(3.0)  # finished: counted nowhere

    status, body = await rig.get("/v1/queue")

    assert status == 200
    rows = {row["backend"]: row for row in body["data"]["backends"]}
    assert sorted(rows) == ["docker", "kubernetes"]
    assert (rows["docker"]["depth"], rows["docker"]["running"]) == (2, 1)
    assert 90 <= rows["docker"]["oldest_queued_age_s"] < 100
    assert (rows["kubernetes"]["depth"], rows["kubernetes"]["running"]) == (1, 0)
    assert 10 <= rows["kubernetes"]["oldest_queued_age_s"] < 20


async def test_submitters_cannot_read_the_queue(rig: Rig) -> None:
    status, body = await rig.get("/v1/queue", ALICE)
    assert status == 403
    assert body["ok"] is False and body["error"]["code"] == "FORBIDDEN"
    resp = await rig.client.get("/v1/queue")
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "AUTH_REQUIRED"


async def test_openapi_documents_the_queue(rig: Rig) -> None:
    status, doc = await rig.get("/openapi.json")
    assert status == 200
    assert set(doc["paths"]["/v1/queue"]["get"]["responses"]) == {"200", "401", "403", "503"}
    assert {"QueuePosition", "BackendQueueInfo"} <= set(doc["components"]["schemas"])


async def _cli(rig: Rig, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    url = str(rig.client.make_url("/")).rstrip("/")
    argv = ["status", *args, "--url", url, "--api-key", ALICE]
    code = await asyncio.to_thread(cli_main, argv)
    return code, capsys.readouterr().out


async def test_cli_status_shows_the_position_and_estimate(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    await rig.job(priority=9, age_s=60, who="bob")
    job = await rig.job(priority=5, age_s=30)

    code, out = await _cli(rig, capsys, job.job_id)
    assert code == 0
    assert f"job {job.job_id}: queued" in out
    assert "queue position 1 on docker (1 ahead)" in out
    assert "estimated start: unknown (no finished runs on this backend yet)" in out

    await rig.ran(30.0)
    code, out = await _cli(rig, capsys, job.job_id)
    assert code == 0 and "estimated start: " in out and "median run 30.0s of the last 1" in out

    code, out = await _cli(rig, capsys, job.job_id, "--json")
    queue = json.loads(out)["data"]["queue"]
    assert code == 0 and queue["position"] == 1 and queue["estimated_start_at"] is not None


def test_run_slots_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(queue_run_slots={"docker": 0})
