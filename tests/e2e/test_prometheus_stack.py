"""A real Prometheus server scrapes the four services, each in its own process on the real stack
(RabbitMQ, the MongoDB-wire server, the Docker backend), through an end-to-end run of three jobs,
one of which fails; the job counts by status, the run-time histogram and the failure's code are
read back through Prometheus's HTTP query API.

Prometheus comes from Debian's ``prometheus`` package (scripts/provision/prometheus.sh); without
its binary the test is skipped outside CI and fails in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from shared.config import Settings
from tests.e2e.harness import Platform, Receiver, delete_rabbit_topology, free_port, raw_settings

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo, pytest.mark.docker, pytest.mark.slow]

SERVICES = {
    "gateway": "services.gateway.main",
    "scheduler": "services.scheduler.main",
    "executor": "services.executor.main",
    "scorer": "services.scorer.main",
}


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail(
            "prometheus is missing: scripts/provision/prometheus.sh (run by test.sh) installs it"
        )
    return found


@contextlib.contextmanager
def processes(config: Path, logs: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """The four services, each in its own process on ``config``."""
    env = {**os.environ, "AUTOSCORER_CONFIG": str(config)}
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, module in SERVICES.items():
            with (logs / f"{name}.log").open("wb") as log:
                running[name] = subprocess.Popen(
                    [sys.executable, "-m", module], env=env, stdout=log, stderr=subprocess.STDOUT
                )
        yield running
    finally:
        for proc in running.values():
            proc.terminate()
        for proc in running.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextlib.asynccontextmanager
async def prometheus(
    tmp: Path, targets: dict[str, int], session: aiohttp.ClientSession
) -> AsyncIterator[str]:
    """A Prometheus server scraping ``targets`` every second; yields its base URL."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "autoscorer",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{p}"], "labels": {"service": name}}
                    for name, p in targets.items()
                ],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (tmp / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/-/ready") as resp:
                    if resp.status == 200:
                        break
            await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


async def query(session: aiohttp.ClientSession, url: str, promql: str) -> list[dict[str, Any]]:
    async with session.get(url + "/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def eventually(
    session: aiohttp.ClientSession, url: str, promql: str, want: dict[str, float], key: str
) -> dict[str, float]:
    """Poll ``promql`` until its series, keyed by label ``key``, have the values ``want``."""
    found: dict[str, float] = {}
    for _ in range(60):
        found = {
            r["metric"].get(key, ""): float(r["value"][1])
            for r in await query(session, url, promql)
        }
        if found == want:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"{promql}: {found} != {want}")


async def test_prometheus_scrapes_the_four_services_through_a_run(
    tmp_path: Path, rabbit_url: str, mongo_url: str, example_images: list[str]
) -> None:
    raw = raw_settings(
        tmp_path,
        bus="rabbitmq",
        store="mongo",
        backend="docker",
        rabbit_url=rabbit_url,
        mongo_url=mongo_url,
    )
    ports = {name: free_port() for name in ("scheduler", "executor", "scorer")}
    raw["ops_http"] = {f"{name}_port": port for name, port in ports.items()}
    raw["executor_service"]["replica_id"] = "prom-executor"
    raw["scorer"]["replica_id"] = "prom-scorer"
    settings = Settings.model_validate(raw)
    settings.gateway.data_root.mkdir(parents=True)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    targets = {"gateway": settings.gateway.port, **ports}
    url = f"http://127.0.0.1:{settings.gateway.port}"
    try:
        with processes(config, tmp_path) as running:
            async with aiohttp.ClientSession() as session:
                platform = Platform(settings, url, session, Receiver())
                await all_ready(session, targets, running, tmp_path)
                async with prometheus(tmp_path, targets, session) as prom:
                    await run_and_check(platform, session, prom)
    finally:
        await delete_rabbit_topology(settings)


async def all_ready(
    session: aiohttp.ClientSession,
    targets: dict[str, int],
    running: dict[str, subprocess.Popen[bytes]],
    logs: Path,
) -> None:
    for name, port in targets.items():
        for _ in range(600):
            if running[name].poll() is not None:
                raise AssertionError((logs / f"{name}.log").read_text()[-3000:])
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{name} never ready: " + (logs / f"{name}.log").read_text())


async def run_and_check(platform: Platform, session: aiohttp.ClientSession, prom: str) -> None:
    good = [platform.add_workspace("classification", f"ok{i}") for i in range(2)]
    bad = platform.add_workspace("classification", "crashes")
    meta_path = platform.settings.gateway.data_root / bad / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["container"]["cmd"] = ["sh", "-c", "exit 3"]
    meta_path.write_text(json.dumps(meta))
    jobs = [await platform.submit(ws) for ws in [*good, bad]]
    done = [await platform.wait(job_id, timeout=240) for job_id in jobs]
    assert [j["status"] for j in done] == ["succeeded", "succeeded", "failed"], done[-1]["error"]
    code = done[-1]["error"]["code"]

    up = await eventually(
        session, prom, 'up{job="autoscorer"}', dict.fromkeys(SERVICES, 1.0), "service"
    )
    assert set(up) == set(SERVICES)
    await eventually(
        session,
        prom,
        "sum by (status) (autoscorer_jobs_finished_total)",
        {"succeeded": 2.0, "failed": 1.0},
        "status",
    )
    failed = await eventually(
        session,
        prom,
        'sum by (code) (autoscorer_jobs_finished_total{status="failed"})',
        {code: 1.0},
        "code",
    )
    assert failed == {code: 1.0}
    await eventually(session, prom, "sum(autoscorer_job_run_seconds_count)", {"": 3.0}, "status")
    # the docker backend timed making each image present (here: already built, so quick)
    await eventually(
        session, prom, "sum(autoscorer_job_image_pull_seconds_count)", {"": 3.0}, "status"
    )
    [run_sum] = await query(session, prom, "sum(autoscorer_job_run_seconds_sum)")
    assert float(run_sum["value"][1]) > 0
    # each worker's own port shows its own part: the executor its slots, the scorer its loops' host
    slots = await query(session, prom, 'autoscorer_executor_run_slots{service="executor"}')
    assert [s["metric"]["replica"] for s in slots] == ["prom-executor"]
    stores = await query(
        session, prom, "sum by (service) (autoscorer_store_operation_seconds_count)"
    )
    assert {s["metric"]["service"] for s in stores} == {"gateway", "scheduler"}
