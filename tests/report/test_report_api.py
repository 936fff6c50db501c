"""GET /v1/jobs/{id}/report and /v1/jobs/{id}/artifacts/{name} on the real gateway app (SQLite
store, in-memory bus): the result's access rules, content types, safe names, the error envelope."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import create_app
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from services.scorer.engine import score_workspace
from services.scorer.registry import ScorerRegistry
from shared.bus_memory import MemoryBus
from shared.config import ApiKey, GatewaySettings
from shared.errors import ErrorCode, Stage, execution_error
from shared.jobs import Job, JobStatus
from shared.models import Result
from shared.store_sqlite import SqliteJobStore
from shared.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ADMIN, ALICE, BOB = "admin-key", "alice-key", "bob-key"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Api:
    client: TestClient
    result: Result
    workspace: Path


def scored_workspace(root: Path, registry: ScorerRegistry) -> tuple[Path, Result]:
    ws_root = root / "alice" / "detection"
    shutil.copytree(EXAMPLES / "detection", ws_root)
    subprocess.run(
        [sys.executable, "submission/predict.py"], cwd=ws_root, check=True, capture_output=True
    )
    ws = Workspace.at(ws_root)
    return ws.root, score_workspace(registry, ws)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    root = tmp_path / "data"
    registry = ScorerRegistry.with_builtins()
    workspace, result = scored_workspace(root, registry)
    assert result.ok
    spec = Workspace.at(workspace).load_spec()
    keys = {ADMIN: ("ops", "admin"), ALICE: ("alice", "submitter"), BOB: ("bob", "submitter")}
    api_keys = [ApiKey(key=k, subject=s, role=r) for k, (s, r) in keys.items()]
    settings = GatewaySettings(data_root=root, api_keys=api_keys)
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.init()
    failure = execution_error(ErrorCode.CONTAINER_EXIT_NONZERO, "exit code 3 <b>bold</b>")
    for job in (
        Job(
            job_id="done",
            spec=spec,
            workspace=str(workspace),
            submitter="alice",
            status=JobStatus.SUCCEEDED,
            result=result,
        ),
        Job(
            job_id="failed",
            spec=spec,
            workspace=str(workspace),
            submitter="alice",
            status=JobStatus.FAILED,
            error=failure.to_info(),
        ),
        Job(job_id="waiting", spec=spec, workspace=str(workspace), submitter="alice"),
    ):
        await store.create(job)
    bus = MemoryBus()
    await bus.start()
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    await hooks.init()
    app = create_app(settings, store, bus, registry.infos(), hooks, instance_id="gw-report")
    async with TestClient(TestServer(app)) as client:
        yield Api(client, result, workspace)
    await bus.close()
    await store.close()


async def error_code(response: object) -> str:
    body = await response.json()  # type: ignore[attr-defined]
    assert body["ok"] is False
    return str(body["error"]["code"])


async def test_report_is_html_for_those_who_may_see_the_result(api: Api) -> None:
    for key in (ALICE, ADMIN):
        response = await api.client.get("/v1/jobs/done/report", headers=auth(key))
        assert response.status == 200
        assert response.content_type == "text/html" and response.charset == "utf-8"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        html = await response.text()
        assert html.count('<img src="data:image/png;base64,') == 3
        assert "mAP" in html and "Provenance" in html
        assert "<th>result version</th><td>1</td>" in html


async def test_report_follows_the_result_access_rules(api: Api) -> None:
    response = await api.client.get("/v1/jobs/done/report", headers=auth(BOB))
    assert response.status == 404 and await error_code(response) == "NOT_FOUND"
    response = await api.client.get("/v1/jobs/done/report")
    assert response.status == 401 and await error_code(response) == "AUTH_REQUIRED"
    response = await api.client.get("/v1/jobs/done/artifacts/ap_by_size", headers=auth(BOB))
    assert response.status == 404 and await error_code(response) == "NOT_FOUND"


async def test_report_of_a_failed_job_shows_its_error_and_none_before(api: Api) -> None:
    response = await api.client.get("/v1/jobs/failed/report", headers=auth(ALICE))
    assert response.status == 200
    html = await response.text()
    assert "CONTAINER_EXIT_NONZERO" in html and Stage.EXECUTION.value in html
    assert "exit code 3 &lt;b&gt;bold&lt;/b&gt;" in html
    response = await api.client.get("/v1/jobs/waiting/report", headers=auth(ALICE))
    assert response.status == 404 and await error_code(response) == "NOT_FOUND"


async def test_artifacts_are_served_by_name_with_their_media_type(api: Api) -> None:
    for name, artifact in api.result.artifacts.items():
        response = await api.client.get(f"/v1/jobs/done/artifacts/{name}", headers=auth(ALICE))
        assert response.status == 200
        assert response.content_type == artifact.media_type == "image/png"
        body = await response.read()
        assert hashlib.sha256(body).hexdigest() == artifact.sha256
        assert response.headers["ETag"] == f'"{artifact.sha256}"'
        assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "name",
    ["nope", "..%2F..%2Finput%2Fgt.json", "..", ".hidden", "a%00b", "pred", "x" * 300],
)
async def test_unknown_or_unsafe_artifact_names_are_not_found(api: Api, name: str) -> None:
    response = await api.client.get(f"/v1/jobs/done/artifacts/{name}", headers=auth(ALICE))
    assert response.status == 404
    assert await error_code(response) == "NOT_FOUND"


async def test_an_artifact_changed_since_scoring_is_not_served(api: Api) -> None:
    path = api.workspace / api.result.artifacts["pr_iou50"].path
    path.write_bytes(path.read_bytes()[:-1])
    response = await api.client.get("/v1/jobs/done/artifacts/pr_iou50", headers=auth(ALICE))
    assert response.status == 404 and await error_code(response) == "NOT_FOUND"
    path.unlink()
    path.symlink_to(api.workspace / "input" / "gt.json")
    response = await api.client.get("/v1/jobs/done/artifacts/pr_iou50", headers=auth(ALICE))
    assert response.status == 404


async def test_openapi_documents_both_routes(api: Api) -> None:
    document = await (await api.client.get("/openapi.json")).json()
    report = document["paths"]["/v1/jobs/{job_id}/report"]["get"]
    assert set(report["responses"]["200"]["content"]) == {"text/html"}
    assert "application/json" in report["responses"]["404"]["content"]
    artifact = document["paths"]["/v1/jobs/{job_id}/artifacts/{name}"]["get"]
    assert "image/png" in artifact["responses"]["200"]["content"]
