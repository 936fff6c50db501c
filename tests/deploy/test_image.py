"""The service image (deploy/Dockerfile, built by scripts/provision/image.sh) run as DEPLOYMENT.md
documents it: uid/gid 10001, tini as PID 1, each service and `autoscorer` commands with a
read-only root file system, writable only where the docs say (/tmp, /var/lib/autoscorer).

Each service runs alone in its container on the in-memory bus and SQLite (no broker needed to
show the image works; docker-compose.yml's test runs them on RabbitMQ and FerretDB together).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.deploy, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"gateway": 8080, "scheduler": 9101, "executor": 9102, "scorer": 9103}
READ_ONLY = [
    "--read-only",
    "--tmpfs", "/tmp",
    "--tmpfs", "/var/lib/autoscorer:uid=10001,gid=10001,mode=0750",
    "--network", "none",
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges:true",
]  # fmt: skip
ENV = {
    "AUTOSCORER__BUS__KIND": "memory",
    "AUTOSCORER__STORE__KIND": "sqlite",
    "AUTOSCORER__STORE__SQLITE_PATH": "/var/lib/autoscorer/jobs.sqlite3",
    "AUTOSCORER__GATEWAY__HOST": "127.0.0.1",
    "AUTOSCORER__GATEWAY__DATA_ROOT": "/var/lib/autoscorer/workspaces",
    "AUTOSCORER__GATEWAY__API_KEYS": '[{"key": "k", "subject": "ops", "role": "admin"}]',
    "AUTOSCORER__OPS_HTTP__SCHEDULER_PORT": "9101",
    "AUTOSCORER__OPS_HTTP__EXECUTOR_PORT": "9102",
    "AUTOSCORER__OPS_HTTP__SCORER_PORT": "9103",
    "AUTOSCORER__LOG__FORMAT": "json",
}
READY = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)"


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="module")
def image() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version = "(.+)"$', text, re.MULTILINE)
    assert match
    ref = f"autoscorer:{match.group(1)}"
    assert docker("image", "inspect", ref, check=False).returncode == 0, (
        f"{ref} is missing: scripts/provision/image.sh builds it"
    )
    return ref


@pytest.fixture(scope="module")
def services(image: str) -> Iterator[dict[str, str]]:
    """The four services started together, each in its own read-only container."""
    env = [arg for name, value in ENV.items() for arg in ("-e", f"{name}={value}")]
    tag = uuid.uuid4().hex[:8]
    started: dict[str, str] = {}
    try:
        for name in SERVICES:
            done = docker(
                "run", "-d", "--name", f"as-image-{name}-{tag}", *READ_ONLY, *env, image, name
            )
            started[name] = done.stdout.strip()
        yield started
    finally:
        for container in started.values():
            docker("rm", "-f", container, check=False)


def wait_ready(container: str, port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/readyz"
    while True:
        probe = docker("exec", container, "python", "-c", READY, url, check=False)
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            logs = docker("logs", "--tail", "30", container, check=False)
            raise AssertionError(f"{url} not ready: {probe.stderr[-800:]}\n{logs.stderr[-3000:]}")
        time.sleep(0.5)


def test_the_image_declares_uid_10001_and_tini(image: str) -> None:
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", image).stdout)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "/usr/local/bin/autoscorer-service"]
    assert config["WorkingDir"] == "/var/lib/autoscorer"
    assert config["Cmd"] == ["gateway"]


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_runs_read_only_as_10001(services: dict[str, str], name: str) -> None:
    container = services[name]
    wait_ready(container, SERVICES[name])
    # every process in the container (tini, the service, its workers) runs as 10001
    uids = docker("exec", container, "sh", "-c", "grep -h '^Uid:' /proc/[0-9]*/status").stdout
    assert {tuple(line.split()[1:]) for line in uids.splitlines()} == {("10001",) * 4}, uids
    init = docker("exec", container, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert init[:2] == ["/usr/bin/tini", "--"] and name in init
    refused = docker("exec", container, "touch", "/opt/autoscorer/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert docker("exec", container, "touch", "/var/lib/autoscorer/x", "/tmp/x").returncode == 0


def test_autoscorer_commands_run_read_only(image: str) -> None:
    env = [arg for name, value in ENV.items() for arg in ("-e", f"{name}={value}")]
    done = docker("run", "--rm", *READ_ONLY, *env, image, "autoscorer", "config", "dump", "--json")
    dumped = json.loads(done.stdout)["data"]
    assert dumped["bus"]["kind"] == "memory" and dumped["store"]["kind"] == "sqlite"
    assert dumped["gateway"]["api_keys"][0]["key"] == "**********"  # secrets stay redacted
    scorers = docker("run", "--rm", *READ_ONLY, image, "autoscorer", "scorers", "list", "--json")
    names = {entry["name"] for entry in json.loads(scorers.stdout)["data"]["scorers"]}
    assert {"classification_f1", "regression_rmse", "detection_map"} <= names
    unknown = docker("run", "--rm", *READ_ONLY, image, "nope", check=False)
    assert unknown.returncode == 2 and "unknown service 'nope'" in unknown.stderr
