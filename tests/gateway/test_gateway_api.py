"""The gateway's HTTP API on the in-memory bus and the SQLite store (the embedded mode)."""

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import create_app
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from services.scorer.main import create_scorer_service
from services.scorer.registry import ScorerRegistry
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import ApiKey, GatewaySettings, Settings
from shared.jobs import JobStatus
from shared.store import ListQuery
from shared.store_sqlite import SqliteJobStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ADMIN, ALICE, BOB = "admin-key", "alice-key", "bob-key"


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


class Harness:
    def __init__(self, client, bus, store, root, seen):
        self.client, self.bus, self.store, self.root, self.seen = client, bus, store, root, seen

    async def submit(self, key=ALICE, workspace="alice/classification", **extra):
        body = {"workspace": workspace, **extra}
        resp = await self.client.post("/v1/jobs", json=body, headers=_auth(key))
        return resp.status, await resp.json()


@pytest.fixture
async def gw(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(EXAMPLES / "classification", root / "alice" / "classification")
    shutil.copytree(EXAMPLES / "regression", root / "bob" / "regression")
    settings = GatewaySettings(
        data_root=root,
        api_keys=[
            ApiKey(key=ADMIN, subject="ops", role="admin"),
            ApiKey(key=ALICE, subject="alice"),
            ApiKey(key=BOB, subject="bob"),
        ],
        max_upload_bytes=200_000,
        max_upload_files=50,
        max_unpacked_bytes=400_000,
    )
    bus, store = MemoryBus(), SqliteJobStore(tmp_path / "jobs.sqlite3")
    seen = []

    async def capture(event):
        seen.append(event)

    await bus.subscribe(Subscription("test.capture", ["#"], capture))
    await bus.start()
    await store.init()
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    await hooks.init()
    app = create_app(
        settings, store, bus, ScorerRegistry.with_builtins().infos(), hooks, instance_id="gw-test"
    )
    async with TestClient(TestServer(app)) as client:
        yield Harness(client, bus, store, root, seen)
    await bus.close()
    await store.close()


async def _settle(bus):
    import asyncio

    await asyncio.sleep(0.05)


async def test_keys_are_required_and_roles_enforced(gw):
    resp = await gw.client.get("/v1/jobs")
    body = await resp.json()
    assert resp.status == 401
    assert body["ok"] is False and body["error"]["code"] == "AUTH_REQUIRED"
    resp = await gw.client.get("/v1/jobs", headers=_auth("wrong"))
    assert resp.status == 401
    resp = await gw.client.post("/v1/scorers/load", json={}, headers=_auth(ALICE))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "FORBIDDEN"
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await gw.client.get(path)).status == 200


async def test_submit_creates_the_job_and_publishes_job_submitted(gw):
    status, body = await gw.submit()
    assert status == 202 and body["ok"] is True
    job_id = body["data"]["job_id"]
    assert job_id != "example-classification"  # one fresh id per submission
    await _settle(gw.bus)
    submitted = [e for e in gw.seen if e.type == "job.submitted"]
    assert [e.job_id for e in submitted] == [job_id]
    assert submitted[0].submitter == "alice" and submitted[0].spec.scorer == "classification_f1"
    job = await gw.store.get(job_id)
    assert job.status is JobStatus.SUBMITTED and job.outbox == []


async def test_workspace_already_active_returns_the_existing_job(gw):
    _, first = await gw.submit()
    status, second = await gw.submit()
    assert status == 200
    assert second["data"] == {
        **second["data"],
        "submitted": False,
        "running": True,
        "job_id": first["data"]["job_id"],
    }


async def test_idempotency_key_returns_the_same_job(gw):
    headers = {**_auth(ALICE), "Idempotency-Key": "abc"}
    first = await gw.client.post(
        "/v1/jobs", json={"workspace": "alice/classification"}, headers=headers
    )
    job_id = (await first.json())["data"]["job_id"]
    await gw.store.transition(job_id, JobStatus.SUBMITTED, JobStatus.CANCELLED)  # no longer active
    again = await gw.client.post(
        "/v1/jobs", json={"workspace": "alice/classification"}, headers=headers
    )
    body = await again.json()
    assert body["data"]["existing"] is True and body["data"]["job_id"] == job_id


@pytest.mark.parametrize("workspace", ["../etc", "/etc", "alice/../../x", "alice/absent", "ws"])
async def test_workspaces_outside_the_data_root_are_refused(gw, workspace):
    if workspace == "ws":
        workspace = "."
    status, body = await gw.submit(workspace=workspace)
    assert status == 400
    assert body["error"]["code"] == "WORKSPACE_INVALID"


async def test_bad_bodies_get_standard_errors(gw):
    resp = await gw.client.post(
        "/v1/jobs", data=b"{nope", headers={**_auth(ALICE), "Content-Type": "application/json"}
    )
    assert (await resp.json())["error"]["code"] == "PARSE_ERROR"
    status, body = await gw.submit(priority=42)
    assert status == 400 and body["error"]["code"] == "CONFIG_VALIDATION_ERROR"
    status, body = await gw.submit(spec={"scorer": "x", "time_limit": -5})
    assert body["error"]["code"] == "CONFIG_VALIDATION_ERROR"


def _tar(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _workspace_members():
    base = EXAMPLES / "regression"
    return [
        (str(p.relative_to(base)), p.read_bytes(), "file")
        for p in base.rglob("*")
        if p.is_file() and "output" not in p.parts and "logs" not in p.parts
    ]


async def _upload(gw, archive, name="ws.tar.gz", key=ALICE):
    form = FormData()
    form.add_field("archive", archive, filename=name)
    form.add_field("priority", "7")
    resp = await gw.client.post("/v1/jobs", data=form, headers=_auth(key))
    return resp.status, await resp.json()


async def test_upload_of_a_workspace_archive(gw):
    status, body = await _upload(gw, _tar(_workspace_members()))
    assert status == 202, body
    job = await gw.store.get(body["data"]["job_id"])
    assert job.priority == 7 and job.spec.scorer == "regression_rmse"
    assert (Path(job.workspace) / "input" / "gt.csv").is_file()


async def test_upload_of_a_zip_inside_one_folder(gw):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data, _ in _workspace_members():
            zf.writestr(f"team7/{name}", data)
    status, body = await _upload(gw, buffer.getvalue(), name="ws.zip")
    assert status == 202, body
    assert (await gw.store.get(body["data"]["job_id"])).workspace.endswith("team7")


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ([("../escape.txt", b"x", "file")], "escapes"),
        ([("/abs.txt", b"x", "file")], "escapes"),
        ([("link", "/etc/passwd", "symlink")], "not a regular file"),
        ([(f"f{i}", b"x", "file") for i in range(60)], "more than 50 files"),
        ([("big", b"\0" * 500_000, "file")], "unpacks to more than"),
    ],
)
async def test_hostile_archives_are_refused_and_leave_nothing(gw, members, fragment):
    status, body = await _upload(gw, _tar(members))
    assert status == 400
    assert body["error"]["code"] == "UPLOAD_REJECTED"
    assert fragment in body["error"]["message"]
    leftovers = list((gw.root / "uploads").rglob("*")) if (gw.root / "uploads").exists() else []
    assert leftovers == []


async def test_upload_too_large_and_not_an_archive(gw):
    status, body = await _upload(gw, b"x" * 250_000)
    assert status in (400, 413)
    status, body = await _upload(gw, b"just some text")
    assert status == 400 and "neither a tar" in body["error"]["message"]


async def test_submitters_see_only_their_jobs_and_admins_all(gw):
    _, a = await gw.submit(ALICE, "alice/classification")
    _, b = await gw.submit(BOB, "bob/regression")
    ida, idb = a["data"]["job_id"], b["data"]["job_id"]
    resp = await gw.client.get(f"/v1/jobs/{idb}", headers=_auth(ALICE))
    assert resp.status == 404
    resp = await gw.client.get("/v1/jobs", headers=_auth(ALICE))
    assert [j["job_id"] for j in (await resp.json())["data"]["jobs"]] == [ida]
    resp = await gw.client.get("/v1/jobs?submitter=bob", headers=_auth(ALICE))
    assert [j["job_id"] for j in (await resp.json())["data"]["jobs"]] == [ida]
    resp = await gw.client.get("/v1/jobs", headers=_auth(ADMIN))
    assert {j["job_id"] for j in (await resp.json())["data"]["jobs"]} == {ida, idb}
    resp = await gw.client.get(
        "/v1/jobs?status=submitted&scorer=regression_rmse", headers=_auth(ADMIN)
    )
    assert [j["job_id"] for j in (await resp.json())["data"]["jobs"]] == [idb]
    job = (await (await gw.client.get(f"/v1/jobs/{ida}", headers=_auth(ALICE))).json())["data"]
    assert "outbox" not in job and job["status"] == "submitted"


async def test_pagination_with_cursor(gw):
    ids = []
    for i in range(5):
        ws = gw.root / "alice" / f"c{i}"
        shutil.copytree(EXAMPLES / "classification", ws)
        ids.append((await gw.submit(workspace=f"alice/c{i}"))[1]["data"]["job_id"])
    got, cursor = [], None
    while True:
        url = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        data = (await (await gw.client.get(url, headers=_auth(ALICE))).json())["data"]
        got += [j["job_id"] for j in data["jobs"]]
        cursor = data["next_cursor"]
        if cursor is None:
            break
    assert got == list(reversed(ids))
    resp = await gw.client.get("/v1/jobs?cursor=garbage", headers=_auth(ALICE))
    assert resp.status == 400


async def test_result_logs_and_cancel(gw):
    _, body = await gw.submit()
    job_id = body["data"]["job_id"]
    resp = await gw.client.get(f"/v1/jobs/{job_id}/result", headers=_auth(ALICE))
    assert resp.status == 404 and (await resp.json())["error"]["details"]["status"] == "submitted"
    logs = gw.root / "alice" / "classification" / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "container.log").write_text("".join(f"line {i}\n" for i in range(500)))
    data = (
        await (await gw.client.get(f"/v1/jobs/{job_id}/logs?tail=3", headers=_auth(ALICE))).json()
    )["data"]
    assert data["content"] == "line 497\nline 498\nline 499" and data["truncated"] is True
    resp = await gw.client.post(f"/v1/jobs/{job_id}/cancel", headers=_auth(ALICE))
    assert resp.status == 202
    await _settle(gw.bus)
    assert [e.job_id for e in gw.seen if e.type == "cancel.requested"] == [job_id]
    await gw.store.transition(job_id, JobStatus.SUBMITTED, JobStatus.CANCELLED)
    resp = await gw.client.post(f"/v1/jobs/{job_id}/cancel", headers=_auth(ALICE))
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "INVALID_STATE"


PLUGIN = """
from shared.models import Result
from shared.scoring import register


@register("always_one", version="{v}", task_type="demo", description="d",
          expected_files=(), primary_metric="one")
def always_one(ws, params):
    return Result(summary={{"one": 1.0}})
"""


async def test_scorer_admin_load_reload_test_and_broadcast(gw):
    scorer = create_scorer_service(  # it installs what the gateway loads; /v1/scorers/test asks it
        Settings(scorer={"pool_size": 1, "plugin_dir": gw.root.parent / "scorer-plugins"}),
        gw.bus,
        ScorerRegistry.with_builtins(),
        instance="scorer-1",
    )
    await scorer.start()
    try:
        await _load_reload_and_test(gw)
    finally:
        await scorer.close()


async def _load_reload_and_test(gw):
    resp = await gw.client.get("/v1/scorers", headers=_auth(ALICE))
    names = [s["name"] for s in (await resp.json())["data"]["scorers"]]
    assert "classification_f1" in names
    body = {"filename": "one.py", "source": PLUGIN.format(v="1.0.0")}
    resp = await gw.client.post("/v1/scorers/load", json=body, headers=_auth(ADMIN))
    assert resp.status == 200 and (await resp.json())["data"]["loaded"] == ["always_one"]
    await _settle(gw.bus)
    changed = [e for e in gw.seen if e.type == "scorers.changed"]
    assert [(e.scorer, e.scorer_version, e.origin) for e in changed] == [
        ("always_one", "1.0.0", "scorer-1")  # the replica that installed it tells the others
    ]
    broken = {"filename": "one.py", "source": PLUGIN.format(v="2.0.0") + "\n)("}
    resp = await gw.client.post("/v1/scorers/reload", json=broken, headers=_auth(ADMIN))
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "SCORER_LOAD_ERROR" and error["details"]["file"] == "one.py"
    assert "scorer-plugins" not in str(error), error  # where a replica keeps files stays there
    assert "1.0.0" in (gw.root / "scorers" / "one.py").read_text()
    resp = await gw.client.post(
        "/v1/scorers/test",
        json={"scorer_name": "always_one", "workspace": "bob/regression"},
        headers=_auth(ADMIN),
    )
    assert (await resp.json())["data"]["result"]["summary"] == {"one": 1.0}


async def test_openapi_documents_every_route(gw):
    doc = await (await gw.client.get("/openapi.json")).json()
    routes = {
        (
            r.method.lower(),
            r.resource.get_info().get("path") or r.resource.get_info().get("formatter"),
        )
        for r in gw.client.app.router.routes()
        if r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    assert all(op["summary"] for ops in doc["paths"].values() for op in ops.values())
    assert "JobSpec" in doc["components"]["schemas"]
    submit = doc["paths"]["/v1/jobs"]["post"]
    assert set(submit["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"202", "409", "422", "413", "415"} <= set(submit["responses"])
    assert "default" not in submit["responses"]
    listed = {p["name"] for p in doc["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert listed >= {"status", "created_from", "created_to", "cursor", "limit"}


async def test_readyz_reports_a_closed_bus(gw):
    assert (await gw.client.get("/readyz")).status == 200
    await gw.bus.close()
    resp = await gw.client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503 and body["error"]["details"]["bus"] == "not connected"
    await gw.bus.start()


async def test_unknown_route_is_an_envelope(gw):
    resp = await gw.client.get("/v1/nope", headers=_auth(ALICE))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "NOT_FOUND"


async def test_rescore_only_finished_jobs(gw):
    _, body = await gw.submit()
    job_id = body["data"]["job_id"]
    resp = await gw.client.post(f"/v1/jobs/{job_id}/rescore", headers=_auth(ALICE))
    assert resp.status == 409
    for a, b in (
        (JobStatus.SUBMITTED, JobStatus.QUEUED),
        (JobStatus.QUEUED, JobStatus.RUNNING),
        (JobStatus.RUNNING, JobStatus.SCORING),
        (JobStatus.SCORING, JobStatus.FAILED),
    ):
        await gw.store.transition(job_id, a, b)
    resp = await gw.client.post(
        f"/v1/jobs/{job_id}/rescore?reason=scorer+fix", headers=_auth(ALICE)
    )
    assert resp.status == 202
    await _settle(gw.bus)
    [event] = [e for e in gw.seen if e.type == "rescore.requested"]
    assert (event.job_id, event.requested_by, event.reason) == (job_id, "alice", "scorer fix")


async def test_params_that_are_not_plain_json_are_refused_before_anything_is_stored(gw):
    """A job's params travel as JSON (events, API): NaN, Infinity, integers beyond 64 bits and
    lone surrogates are refused at submission, in the body (strict JSON: PARSE_ERROR) as in a
    workspace's meta.json (CONFIG_VALIDATION_ERROR naming the param); the Mongo store could
    not hold them either (docs/STORE.md)."""
    spec = {"scorer": "classification_f1", "params": {"seed": 2**64, "w": {"a.b": [1, 2**70]}}}
    status, body = await gw.submit(spec=spec)
    error = body["error"]
    assert (status, error["code"], error["stage"]) == (400, "CONFIG_VALIDATION_ERROR", "validation")
    [problem] = error["details"]["errors"]
    assert problem["loc"] == ["params"]
    assert 'params["seed"] is an integer beyond 64 bits' in problem["msg"]
    assert 'params["w"]["a.b"][1] is an integer beyond 64 bits' in problem["msg"]
    raw = b'{"workspace": "alice/classification", "spec": {"scorer": "x", "params": {"a": NaN}}}'
    resp = await gw.client.post(
        "/v1/jobs", data=raw, headers={**_auth(ALICE), "Content-Type": "application/json"}
    )
    assert (resp.status, (await resp.json())["error"]["code"]) == (400, "PARSE_ERROR")
    meta_path = gw.root / "alice" / "classification" / "meta.json"
    for value, shown in [
        ("NaN", "is nan"),
        ("-Infinity", "is -inf"),
        ("18446744073709551616", "is an integer beyond 64 bits"),
        ('"\\udcff"', "holds a lone UTF-16 surrogate"),
    ]:
        meta = meta_path.read_text().replace('"params": {}', f'"params": {{"lr": {value}}}')
        meta_path.write_text(meta)
        status, body = await gw.submit()
        error = body["error"]
        assert (status, error["code"], error["stage"]) == (
            400,
            "CONFIG_VALIDATION_ERROR",
            "validation",
        ), value
        assert error["details"]["path"] == "meta.json"
        assert f'params["lr"] {shown}' in error["details"]["errors"][0]["msg"]
        meta_path.write_text(meta.replace(f'"params": {{"lr": {value}}}', '"params": {}'))
    await _settle(gw.bus)
    assert [e for e in gw.seen if e.type == "job.submitted"] == []
    assert (await gw.store.list_jobs(ListQuery())).jobs == []
