"""One active job per workspace across gateway replicas (issue 7, class 5): two gateway apps, each
with its own client of one FerretDB database, take 20 simultaneous submissions of one workspace.
Exactly one job is created; every other answer is that job (to whoever may see it). Before the
store's workspace claim, each replica checked only its own requests and two jobs were created.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import create_app
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from services.scorer.registry import ScorerRegistry
from shared.bus_memory import MemoryBus
from shared.config import ApiKey, GatewaySettings
from shared.store import JobStore, ListQuery
from tests.scheduler.real import Names, drop_database, open_store

pytestmark = pytest.mark.mongo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ADMIN, ALICE, BOB = "admin-key", "alice-key", "bob-key"
SUBMITS = 20


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Replicas:
    def __init__(self, clients: list[TestClient[Any, Any]], store: JobStore) -> None:
        self.clients, self.store = clients, store

    async def submit(self, n: int, key: str, workspace: str) -> tuple[int, dict[str, Any]]:
        client = self.clients[n % len(self.clients)]
        resp = await client.post("/v1/jobs", json={"workspace": workspace}, headers=_auth(key))
        return resp.status, await resp.json()


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[Replicas]:
    root = tmp_path / "data"
    shutil.copytree(EXAMPLES / "classification", root / "alice" / "classification")
    settings = GatewaySettings(
        data_root=root,
        api_keys=[
            ApiKey(key=ADMIN, subject="ops", role="admin"),
            ApiKey(key=ALICE, subject="alice"),
            ApiKey(key=BOB, subject="bob"),
        ],
    )
    names = Names.fresh("gwreplicas")
    stores = [open_store(names) for _ in range(2)]
    bus = MemoryBus()
    await bus.start()
    clients: list[TestClient[Any, Any]] = []
    try:
        for n, store in enumerate(stores):
            await store.init()
            hooks = SqliteWebhookStore(tmp_path / f"hooks-{n}.sqlite3")
            await hooks.init()
            scorers = ScorerRegistry.with_builtins().infos()
            app = create_app(settings, store, bus, scorers, hooks, instance_id=f"gw-{n}")
            client: TestClient[Any, Any] = TestClient(TestServer(app))
            await client.start_server()
            clients.append(client)
        yield Replicas(clients, stores[0])
    finally:
        for client in clients:
            await client.close()
        await bus.close()
        for store in stores:
            await store.close()
        await drop_database(names.database)


async def test_simultaneous_submissions_on_two_replicas_create_one_job(replicas: Replicas) -> None:
    keys = [ADMIN if n % 4 == 3 else ALICE for n in range(SUBMITS)]  # the owner and an operator

    started = time.perf_counter()
    answers = await asyncio.gather(
        *(replicas.submit(n, key, "alice/classification") for n, key in enumerate(keys))
    )
    took = time.perf_counter() - started

    winners = [n for n, (status, _) in enumerate(answers) if status == 202]
    assert len(winners) == 1
    job_id = answers[winners[0]][1]["data"]["job_id"]
    owner = keys[winners[0]]
    for n, (status, body) in enumerate(answers):
        if n == winners[0]:
            continue
        if keys[n] == owner or keys[n] == ADMIN:  # whoever may see the job gets it
            assert status == 200, body
            assert body["data"]["running"] is True and body["data"]["job_id"] == job_id
        else:  # an operator's job on alice's folder is not alice's to see
            assert status == 409 and body["error"]["code"] == "INVALID_STATE", body
            assert job_id not in str(body)
    stored = await replicas.store.list_jobs(ListQuery())
    assert [job.job_id for job in stored.jobs] == [job_id]
    print(f"\n{SUBMITS} simultaneous submissions on 2 replicas: 1 job in {took:.2f} s")


async def test_a_submitter_gets_409_on_either_replica_for_a_job_not_theirs(
    replicas: Replicas,
) -> None:
    status, first = await replicas.submit(0, ADMIN, "alice/classification")
    assert status == 202
    job_id = first["data"]["job_id"]

    answers = await asyncio.gather(
        *(replicas.submit(n, ALICE, "alice/classification") for n in range(6)),
        *(replicas.submit(n, BOB, "alice/classification") for n in range(2)),
    )

    assert [status for status, _ in answers] == [409] * 6 + [403] * 2
    assert all(job_id not in str(body) for _, body in answers)
    stored = await replicas.store.list_jobs(ListQuery())
    assert [job.job_id for job in stored.jobs] == [job_id]


def _archive() -> bytes:
    base = EXAMPLES / "regression"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in base.rglob("*"):
            if path.is_file() and "output" not in path.parts and "logs" not in path.parts:
                tar.add(path, arcname=str(path.relative_to(base)))
    return buffer.getvalue()


async def test_one_upload_replayed_on_two_replicas_makes_one_job_and_keeps_one_folder(
    replicas: Replicas, tmp_path: Path
) -> None:
    archive = _archive()

    async def upload(n: int) -> tuple[int, dict[str, Any]]:
        form = FormData()
        form.add_field("archive", archive, filename="ws.tar.gz")
        headers = {**_auth(ALICE), "Idempotency-Key": "upload-1"}
        resp = await replicas.clients[n % 2].post("/v1/jobs", data=form, headers=headers)
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(upload(n) for n in range(6)))

    assert sorted(status for status, _ in answers) == [200] * 5 + [202]
    job_ids = {body["data"]["job_id"] for _, body in answers}
    assert len(job_ids) == 1
    job = await replicas.store.get(job_ids.pop())
    assert job is not None
    kept = [p for p in (tmp_path / "data" / "uploads").iterdir() if not p.name.startswith(".")]
    assert len(kept) == 1 and Path(job.workspace).is_relative_to(kept[0])
    assert await replicas.store.claim_workspace(job.workspace, "job-other") == job.job_id
