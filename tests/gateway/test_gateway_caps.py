"""Operator caps at admission (issue 7 class 6, CONVENTIONS item 15).

The gateway as its composition root builds it (``create_gateway`` with ``Settings.limits``), on the
embedded parts (in-memory bus, SQLite stores). A spec asking for more memory, CPU, ``/dev/shm``,
time or GPUs than the operator's caps is refused at submission with 422
``RESOURCE_LIMIT_EXCEEDED`` in the standard envelope, whether it comes as a JSON ``spec``, as the
workspace's meta.json, as an uploaded archive's meta.json or as an upload's ``spec`` field: no job
is recorded, no ``JobSubmitted`` is published, and nothing of an upload stays on disk. A spec at
or within the caps is accepted.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings

from services.gateway.main import create_gateway
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.events import Event
from shared.store import ListQuery
from shared.store_sqlite import SqliteJobStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ALICE, ADMIN = "alice-key", "ops-key"
LIMITS = {
    "max_memory": "2Gi",
    "max_cpu": 2,
    "max_shm": "256Mi",
    "max_time_limit_s": 600,
    "max_gpus": 1,
}
BASE_SPEC: dict[str, Any] = json.loads((EXAMPLES / "classification" / "meta.json").read_text())
OVER_CAPS: list[tuple[str, dict[str, Any]]] = [
    ("resources.memory", {"resources": {"cpu": 1, "memory": "3Gi"}}),
    ("resources.memory", {"resources": {"cpu": 1, "memory": "1000Ti"}}),
    ("resources.cpu", {"resources": {"cpu": 2.5, "memory": "512Mi"}}),
    ("resources.cpu", {"resources": {"cpu": 256, "memory": "512Mi"}}),
    ("container.shm_size", {"container": {**BASE_SPEC["container"], "shm_size": "257Mi"}}),
    ("container.shm_size", {"container": {**BASE_SPEC["container"], "shm_size": "500Gi"}}),
    ("time_limit", {"time_limit": 601}),
    ("time_limit", {"time_limit": 7 * 24 * 3600}),
    ("resources.gpus", {"resources": {"cpu": 1, "memory": "512Mi", "gpus": 2}}),
    ("resources.gpus", {"container": {**BASE_SPEC["container"], "gpus": 64}}),
]
OVER_IDS = [f"{field}-{i}" for i, (field, _) in enumerate(OVER_CAPS)]
AT_CAPS: dict[str, Any] = {
    "resources": {"cpu": 2, "memory": "2Gi", "gpus": 1},
    "time_limit": 600,
    "container": {**BASE_SPEC["container"], "shm_size": "256Mi"},
}

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


def spec_with(overrides: dict[str, Any]) -> dict[str, Any]:
    return {**BASE_SPEC, **overrides}


def auth(key: str = ALICE) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Gw:
    def __init__(self, client: TestClient, store: SqliteJobStore, root: Path) -> None:
        self.client, self.store, self.root = client, store, root
        self.seen: list[Event] = []

    async def capture(self, event: Event) -> None:
        self.seen.append(event)

    def leftovers(self) -> set[str]:
        uploads = self.root / "uploads"
        return {p.name for p in uploads.iterdir()} if uploads.exists() else set()

    async def jobs(self) -> list[Any]:
        return (await self.store.list_jobs(ListQuery())).jobs

    def workspace(self, spec: dict[str, Any]) -> str:
        """A new folder of alice's holding the classification example with ``spec`` as meta."""
        name = f"alice/ws-{uuid.uuid4().hex[:8]}"
        shutil.copytree(EXAMPLES / "classification", self.root / name)
        (self.root / name / "meta.json").write_text(json.dumps(spec))
        return name

    async def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post("/v1/jobs", json=body, headers=auth())
        return resp.status, await resp.json()

    async def upload(self, meta: dict[str, Any], **fields: str) -> tuple[int, dict[str, Any]]:
        form = FormData()
        form.add_field("archive", archive(meta), filename="ws.tar.gz")
        for name, value in fields.items():
            form.add_field(name, value)
        resp = await self.client.post("/v1/jobs", data=form, headers=auth())
        return resp.status, await resp.json()


def archive(meta: dict[str, Any]) -> bytes:
    """The classification example as a tar.gz, with ``meta`` as its meta.json."""
    base = EXAMPLES / "classification"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(base.rglob("*")):
            if not path.is_file() or {"output", "logs"} & set(path.parts):
                continue
            name = str(path.relative_to(base))
            data = json.dumps(meta).encode() if name == "meta.json" else path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@contextlib.asynccontextmanager
async def running_gateway(tmp_path: Path) -> AsyncIterator[Gw]:
    root = tmp_path / "data"
    shutil.copytree(EXAMPLES / "classification", root / "alice" / "classification")
    config = Settings.model_validate(
        {
            "gateway": {
                "data_root": str(root),
                "api_keys": [
                    {"key": ALICE, "subject": "alice"},
                    {"key": ADMIN, "subject": "ops", "role": "admin"},
                ],
            },
            "scorer": {"plugin_dir": str(tmp_path / "plugins")},
            "limits": LIMITS,
        }
    )
    bus = MemoryBus()
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    await store.init()
    await hooks.init()
    service = await create_gateway(config, store, bus, hooks)
    try:
        async with TestClient(TestServer(service.app)) as client:
            gw = Gw(client, store, root)
            await bus.subscribe(Subscription("test.capture", ["#"], gw.capture))
            await bus.start()
            service.start()
            yield gw
    finally:
        await service.close()
        await bus.close()
        await hooks.close()
        await store.close()


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gw]:
    async with running_gateway(tmp_path) as served:
        yield served


async def assert_refused(gw: Gw, status: int, body: dict[str, Any], field: str) -> None:
    assert status == 422, body
    assert body["ok"] is False
    error = body["error"]
    assert error["code"] == "RESOURCE_LIMIT_EXCEEDED" and error["stage"] == "config"
    assert field in [item["field"] for item in error["details"]["exceeded"]]
    assert "Traceback" not in json.dumps(body)
    assert await gw.jobs() == []  # no job recorded
    assert not [e for e in gw.seen if e.type == "job.submitted"]
    assert gw.leftovers() == set()  # nothing of an upload on disk


@pytest.mark.parametrize(("field", "overrides"), OVER_CAPS, ids=OVER_IDS)
async def test_json_spec_over_a_cap_is_422(gw: Gw, field: str, overrides: dict[str, Any]) -> None:
    status, body = await gw.submit(
        {"workspace": "alice/classification", "spec": spec_with(overrides)}
    )
    await assert_refused(gw, status, body, field)


@pytest.mark.parametrize(("field", "overrides"), OVER_CAPS, ids=OVER_IDS)
async def test_workspace_meta_over_a_cap_is_422(
    gw: Gw, field: str, overrides: dict[str, Any]
) -> None:
    status, body = await gw.submit({"workspace": gw.workspace(spec_with(overrides))})
    await assert_refused(gw, status, body, field)


@pytest.mark.parametrize(("field", "overrides"), OVER_CAPS, ids=OVER_IDS)
async def test_uploaded_meta_over_a_cap_is_422_and_leaves_nothing(
    gw: Gw, field: str, overrides: dict[str, Any]
) -> None:
    status, body = await gw.upload(spec_with(overrides))
    await assert_refused(gw, status, body, field)


@pytest.mark.parametrize(("field", "overrides"), OVER_CAPS, ids=OVER_IDS)
async def test_upload_spec_field_over_a_cap_is_422_and_leaves_nothing(
    gw: Gw, field: str, overrides: dict[str, Any]
) -> None:
    status, body = await gw.upload(BASE_SPEC, spec=json.dumps(spec_with(overrides)))
    await assert_refused(gw, status, body, field)


async def test_every_field_over_its_cap_is_named(gw: Gw) -> None:
    everything: dict[str, Any] = {
        "resources": {"cpu": 3, "memory": "3Gi", "gpus": 2},
        "time_limit": 601,
        "container": {**BASE_SPEC["container"], "shm_size": "1Gi"},
    }
    status, body = await gw.submit(
        {"workspace": "alice/classification", "spec": spec_with(everything)}
    )
    await assert_refused(gw, status, body, "resources.memory")
    fields = {item["field"] for item in body["error"]["details"]["exceeded"]}
    assert fields == {
        "resources.memory",
        "resources.cpu",
        "container.shm_size",
        "time_limit",
        "resources.gpus",
    }


async def test_a_json_spec_at_the_caps_is_accepted(gw: Gw) -> None:
    status, body = await gw.submit(
        {"workspace": "alice/classification", "spec": spec_with(AT_CAPS)}
    )
    assert status == 202, body
    (job,) = await gw.jobs()
    assert job.spec.resources.memory == "2Gi" and job.spec.time_limit == 600
    assert [e.job_id for e in gw.seen if e.type == "job.submitted"] == [job.job_id]


async def test_an_upload_at_the_caps_is_accepted_and_kept(gw: Gw) -> None:
    status, body = await gw.upload(spec_with(AT_CAPS))
    assert status == 202, body
    (job,) = await gw.jobs()
    assert Path(job.workspace).is_relative_to(gw.root / "uploads")
    assert len(gw.leftovers()) == 1


async def test_the_example_within_the_default_caps_is_accepted(gw: Gw) -> None:
    status, body = await gw.submit({"workspace": "alice/classification"})
    assert status == 202, body


def _resources() -> st.SearchStrategy[dict[str, Any]]:
    mib = st.integers(min_value=64, max_value=8 * 1024)
    return st.fixed_dictionaries(
        {
            "resources": st.fixed_dictionaries(
                {
                    "cpu": st.sampled_from([0.5, 1, 2, 2.01, 3, 16]),
                    "memory": mib.map(lambda m: f"{m}Mi"),
                    "gpus": st.integers(min_value=0, max_value=3),
                }
            ),
            "time_limit": st.integers(min_value=1, max_value=1200),
            "container": st.fixed_dictionaries(
                {
                    "image": st.just(BASE_SPEC["container"]["image"]),
                    "cmd": st.just(BASE_SPEC["container"]["cmd"]),
                    "shm_size": st.integers(min_value=1, max_value=512).map(lambda m: f"{m}Mi"),
                }
            ),
        }
    )


def _within(overrides: dict[str, Any]) -> bool:
    """Worked out from LIMITS by hand (not by the code under test)."""
    res, container = overrides["resources"], overrides["container"]
    return (
        int(res["memory"].removesuffix("Mi")) <= 2048
        and res["cpu"] <= 2
        and res["gpus"] <= 1
        and overrides["time_limit"] <= 600
        and int(container["shm_size"].removesuffix("Mi")) <= 256
    )


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(overrides=_resources(), upload=st.booleans())
async def test_any_spec_is_accepted_iff_within_the_caps(
    tmp_path: Path, overrides: dict[str, Any], upload: bool
) -> None:
    spec = spec_with(overrides)
    async with running_gateway(tmp_path / uuid.uuid4().hex) as gw:
        if upload:
            status, body = await gw.upload(spec)
        else:
            status, body = await gw.submit({"workspace": "alice/classification", "spec": spec})
        if _within(overrides):
            assert status == 202, body
            assert len(await gw.jobs()) == 1
            assert len(gw.leftovers()) == (1 if upload else 0)
        else:
            assert status == 422 and body["error"]["code"] == "RESOURCE_LIMIT_EXCEEDED", body
            assert await gw.jobs() == [] and gw.leftovers() == set()
