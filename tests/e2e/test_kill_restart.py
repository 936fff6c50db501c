"""(e) The executor service killed (SIGKILL) in the middle of a Docker run and started again:
the job still ends once, correctly, and no container is left behind."""

import asyncio
import json
import os
import signal
import subprocess
import sys

import aiodocker
import pytest
import yaml

from shared.config import Settings
from tests.e2e.harness import raw_settings, running_platform

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo, pytest.mark.docker, pytest.mark.slow]


def _start_executor(config_file, log_file):
    env = {**os.environ, "AUTOSCORER_CONFIG": str(config_file)}
    return subprocess.Popen(
        [sys.executable, "-m", "services.executor.main"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )


async def _containers_of(job_id):
    async with aiodocker.Docker() as docker:
        found = await docker.containers.list(
            all=True, filters={"label": [f"autoscorer.job_id={job_id}"]}
        )
        return [c.id for c in found]


async def test_e_executor_killed_mid_run_and_restarted(
    tmp_path, rabbit_url, mongo_url, example_images
):
    raw = raw_settings(
        tmp_path,
        bus="rabbitmq",
        store="mongo",
        backend="docker",
        rabbit_url=rabbit_url,
        mongo_url=mongo_url,
    )
    # the executor that runs docker jobs lives in its own process; the in-process one idles
    raw["executor"] = {
        "default_backend": "local",
        "backends": {
            "local": {"type": "local"},
            "idle": {"type": "local"},
            "docker": {"type": "docker"},
        },
    }
    executor_raw = json.loads(json.dumps(raw))
    executor_raw["executor_service"].update(backend="docker", replica_id="e2e-executor")
    raw["executor_service"]["backend"] = "idle"
    config = tmp_path / "executor.yaml"
    config.write_text(yaml.safe_dump(executor_raw))
    settings = Settings.model_validate(raw)
    log = (tmp_path / "executor.log").open("w")
    async with running_platform(settings) as platform:
        name = platform.add_workspace("classification")
        meta_path = settings.gateway.data_root / name / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["container"]["cmd"] = ["sh", "-c", "sleep 5 && python3 submission/predict.py"]
        meta_path.write_text(json.dumps(meta))
        first = _start_executor(config, log)
        try:
            job_id = await platform.submit(name)
            # a fresh executor process imports, connects and declares its queues first: on a
            # loaded 2-core CI machine that took over 30 s once, so the bound is generous
            for _ in range(1200):
                job = await platform.call("GET", f"/v1/jobs/{job_id}")
                if job["status"] == "running" and await _containers_of(job_id):
                    break
                await asyncio.sleep(0.1)
            assert job["status"] == "running", (
                job["status"],
                (tmp_path / "executor.log").read_text()[-3000:],
            )
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            second = _start_executor(config, log)
            try:
                done = await platform.wait(job_id, timeout=180)
            finally:
                second.send_signal(signal.SIGTERM)
                second.wait(30)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(10)
            log.close()
        assert done["status"] == "succeeded", (
            done["error"],
            done["attempts"],
            (tmp_path / "executor.log").read_text()[-3000:],
        )
        assert 0.5 < done["result"]["summary"]["f1_macro"] < 1.0
        await asyncio.sleep(1.0)
        await platform.wait_for_webhooks(1)
        assert list(platform.receiver.verified_scores()) == [job_id]
        assert len(platform.receiver.events) == 1  # ended once: one ScoreCompleted
        assert await _containers_of(job_id) == []
