"""Retention with a short TTL: expired uploads go, a workspace with an active job stays, organiser
workspaces are kept unless their TTL is set, the data root's disk use is a metric, and the
participant view is removed after a run.

Real job stores (SQLite and FerretDB), real folders, the real local backend through the CLI's
``run_job``; the clock is the file times (set with ``os.utime``), not a fake.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from services.cli.jobs import run_job
from services.scorer.registry import ScorerRegistry
from shared.config import RetentionSettings, Settings
from shared.jobs import JobStatus, new_job
from shared.metrics import Metrics
from shared.models import JobSpec
from shared.retention import RetentionReaper, disk_bytes, remove_participant_view
from shared.store import JobStore
from shared.workspace import Workspace, prepare_participant_view

TTL = 60.0
OLD = time.time() - 3600


def workspace(folder: Path, *, finished: bool = True, age: float | None = OLD) -> Path:
    (folder / "input").mkdir(parents=True)
    (folder / "output").mkdir()
    (folder / "logs").mkdir()
    (folder / "input" / "gt.csv").write_text("id,label\na,1\n")
    (folder / "meta.json").write_text(json.dumps({"scorer": "classification_f1"}))
    if finished:
        (folder / "output" / "result.json").write_text("{}")
    if age is not None:
        for path in [folder, *folder.rglob("*")]:
            os.utime(path, (age, age))
    return folder


async def running_job(store: JobStore, folder: Path) -> None:
    """An active job holding ``folder``, as the gateway leaves it: stored and claimed."""
    job = new_job(JobSpec(scorer="classification_f1"), workspace=str(folder))
    assert (await store.create(job)).created
    assert await store.claim_workspace(str(folder), job.job_id) == job.job_id
    moved = await store.transition(job.job_id, JobStatus.SUBMITTED, JobStatus.QUEUED)
    assert moved.applied


async def test_expired_uploads_go_and_active_ones_stay(tmp_path: Path, store: JobStore) -> None:
    root = tmp_path / "data"
    expired = workspace(root / "uploads" / "a" / "ws")
    (root / "uploads" / "a").touch()
    os.utime(root / "uploads" / "a", (OLD, OLD))
    busy = workspace(root / "uploads" / "b")
    fresh = workspace(root / "uploads" / "c", age=None)
    receiving = root / "uploads" / ".receiving-x"
    receiving.mkdir()
    os.utime(receiving, (OLD, OLD))
    organiser = workspace(root / "alice" / "round1")
    await running_job(store, busy)
    metrics = Metrics()
    settings = RetentionSettings(uploads_ttl_s=TTL, interval_s=1)
    reaper = RetentionReaper(root, settings, store, gauge=metrics.data_root_bytes)

    swept = await reaper.sweep()

    assert swept.removed == [str(root.resolve() / "uploads" / "a")]
    assert not expired.exists()
    assert busy.is_dir()  # an active job's workspace is never touched
    assert str(busy.resolve()) in swept.kept_active
    assert fresh.is_dir()
    assert receiving.is_dir()  # a request still unpacking
    assert organiser.is_dir()  # off by default for workspaces named by path
    assert swept.data_root_bytes == disk_bytes(root) > 0
    exported = metrics.exposition().decode()
    assert f"autoscorer_data_root_bytes {float(swept.data_root_bytes)}" in exported
    # the reaper's claims are gone again: the active job still holds its workspace, a new
    # job can claim the removed one's path
    job = new_job(JobSpec(scorer="x"), workspace="other")
    assert await store.claim_workspace(str(root / "uploads" / "a" / "ws"), job.job_id) == job.job_id


async def test_finished_organiser_workspaces_expire_when_configured(
    tmp_path: Path, store: JobStore
) -> None:
    root = tmp_path / "data"
    done = workspace(root / "alice" / "round1")
    never_ran = workspace(root / "alice" / "dataset", finished=False)
    busy = workspace(root / "bob" / "deep" / "er" / "ws")
    await running_job(store, busy)
    settings = RetentionSettings(uploads_ttl_s=None, workspaces_ttl_s=TTL)

    swept = await RetentionReaper(root, settings, store).sweep()

    assert swept.removed == [str(done.resolve())]
    assert never_ran.is_dir()
    assert busy.is_dir()
    assert str(busy.resolve()) in swept.kept_active


def test_the_default_is_on_for_uploads_and_off_for_organiser_workspaces() -> None:
    retention = Settings().gateway.retention
    assert retention.uploads_ttl_s is not None
    assert retention.uploads_ttl_s > 0
    assert retention.workspaces_ttl_s is None


async def test_the_participant_view_is_removed_after_a_run(tmp_path: Path) -> None:
    """The local backend through the CLI's run: the view existed during the run, not after."""
    ws_root = tmp_path / "ws"
    (ws_root / "input").mkdir(parents=True)
    (ws_root / "input" / "gt.csv").write_text("id,label\na,cat\n")
    (ws_root / "input" / "data.csv").write_text("id\na\n")
    script = (
        "import os, sys; open('output/pred.csv', 'w').write('id,label\\na,cat\\n'); "
        "open('output/seen.txt', 'w').write(' '.join(sorted(os.listdir('input'))))"
    )
    meta = {
        "scorer": "classification_f1",
        "container": {"image": "local", "cmd": [sys.executable, "-c", script]},
    }
    (ws_root / "meta.json").write_text(json.dumps(meta))
    ws = Workspace.at(ws_root)
    settings = Settings.model_validate({"executor": {"default_backend": "local"}})
    outcome = await run_job(settings, ScorerRegistry.with_builtins(), ws, "local")
    assert outcome.status == "succeeded", outcome.error
    assert (ws.output_dir / "seen.txt").read_text() == "data.csv"  # it ran in the view
    assert not ws.participant_dir.exists()
    assert not ws.private_dir.exists()


def test_removing_the_view_never_follows_links(tmp_path: Path) -> None:
    ws_root = workspace(tmp_path / "ws", age=None)
    ws = Workspace.at(ws_root)
    prepare_participant_view(ws, JobSpec(scorer="x"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (ws.participant_dir / "link").symlink_to(outside)
    remove_participant_view(ws)
    assert not ws.participant_dir.exists()
    assert (outside / "keep.txt").read_text() == "keep"
    assert (ws.input_dir / "gt.csv").is_file()  # hard links removed, the originals kept


@pytest.mark.parametrize("ttl", [0, -1])
def test_a_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        RetentionSettings(uploads_ttl_s=ttl)


async def test_the_gateway_runs_the_reaper_under_its_supervisor(tmp_path: Path) -> None:
    """The gateway as its composition root builds it: the supervised ``retention`` loop removes
    an expired upload by itself and exports the data root's disk use on GET /metrics."""
    from aiohttp.test_utils import TestClient, TestServer

    from services.gateway.main import create_gateway
    from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
    from shared.bus_memory import MemoryBus
    from shared.store_sqlite import SqliteJobStore

    root = tmp_path / "data"
    expired = workspace(root / "uploads" / "old")
    config = Settings.model_validate(
        {
            "gateway": {
                "data_root": str(root),
                "insecure_no_auth": True,
                "retention": {"uploads_ttl_s": TTL, "interval_s": 0.1},
            },
            "scorer": {"plugin_dir": str(tmp_path / "plugins")},
        }
    )
    bus, store = MemoryBus(), SqliteJobStore(tmp_path / "jobs.sqlite3")
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    await store.init()
    await hooks.init()
    metrics = Metrics()
    service = await create_gateway(config, store, bus, hooks, metrics)
    try:
        await bus.start()
        service.start()
        for _ in range(100):
            if not expired.exists():
                break
            await asyncio.sleep(0.05)
        assert not expired.exists()
        assert service.supervisor.health()["retention"].healthy
        async with TestClient(TestServer(service.app)) as client:
            exported = await (await client.get("/metrics")).text()
        assert "autoscorer_data_root_bytes " in exported
    finally:
        await service.close()
        await bus.close()
        await hooks.close()
        await store.close()
