"""docker-compose.yml, brought up for real with Docker Compose v2 (scripts/provision/compose.sh).

The project's own compose file runs with deploy/compose/ci.override.yml, which only swaps the
images no registry serves here for local stand-ins (scripts/provision/image.sh builds them and
autoscorer:<version>). One ``up`` serves the whole module; ``down -v`` always runs at the end.
The host prepares what docs/DEPLOYMENT.md asks of an operator: a ``.env`` with the secrets, the
data folder owned by 10001 with mode 2775 on a shared mount (the executor's rshared bind).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.scorer.engine import score_workspace
from services.scorer.registry import ScorerRegistry
from shared.workspace import Workspace
from tests.e2e.harness import EXAMPLE_METRICS

pytestmark = [pytest.mark.deploy, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
FILES = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "deploy/compose/ci.override.yml")]
CLI = str(ROOT / ".venv" / "bin" / "autoscorer")
PARTICIPANT_BASE = "autoscorer-test/python:3.11"
EXECUTOR_LABEL = "autoscorer.executor=docker"
INSTANCE = "autoscorer.instance=executor-1"  # AUTOSCORER__EXECUTOR_SERVICE__REPLICA_ID
PORTS = (
    "AUTOSCORER_GATEWAY_PORT",
    "RABBITMQ_MANAGEMENT_PORT",
    "JAEGER_UI_PORT",
    "OTLP_HTTP_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
)
TERMINAL = ("score.completed", "job.failed", "job.cancelled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=check, cwd=ROOT
    )


def project_version() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version = "(.+)"$', text, re.MULTILINE)
    assert match
    return match.group(1)


@dataclass
class Receiver:
    """Webhook deliveries as they arrived: (lower-cased headers, raw body)."""

    server: http.server.ThreadingHTTPServer
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        found = [json.loads(body) for _, body in list(self.deliveries)]
        return [event for event in found if event.get("job_id") == job_id]


def start_receiver(host: str) -> Receiver:
    deliveries: list[tuple[dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Receiver(server, deliveries)


@dataclass
class Stack:
    project: str
    env_file: Path
    data_dir: Path
    url: str
    key: str
    receiver: Receiver | None = None
    webhook_secret: str = ""

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        base = ["docker", "compose", "-p", self.project, "--env-file", str(self.env_file)]
        return run(*base, *FILES, *args, timeout=timeout)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["data"]

    def submit(self, workspace: Path, *, wait: bool) -> dict[str, Any]:
        args = [CLI, "submit", "--json", str(workspace), "--url", self.url, "--api-key", self.key]
        if wait:
            args += ["--wait", "--wait-timeout", "180"]
        done = run(*args, timeout=240, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        data: dict[str, Any] = json.loads(done.stdout)["data"]
        return data

    def wait_status(self, job_id: str, wanted: set[str], timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.api("GET", f"/v1/jobs/{job_id}")
            if job["status"] in wanted or time.monotonic() > deadline:
                return job
            time.sleep(0.25)


def build_participant_images() -> None:
    for name in EXAMPLE_METRICS:
        run(
            "docker", "build", "-q", "--build-arg", f"BASE={PARTICIPANT_BASE}",
            "-t", f"autoscorer-examples/{name}:1", str(ROOT / "examples" / name / "submission"),
        )  # fmt: skip


def logs_of(stack: Stack) -> str:
    done = stack.compose("logs", "--no-color", "--tail", "40", timeout=60)
    return done.stdout[-20000:]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for image in (f"autoscorer:{project_version()}", "autoscorer-ci/mongo:ferretdb-1.24"):
        assert run("docker", "image", "inspect", image, check=False).returncode == 0, (
            f"{image} is missing: scripts/provision/image.sh builds it"
        )
    build_participant_images()
    base = tmp_path_factory.mktemp("compose")
    data = base / "data"
    # What DEPLOYMENT.md asks of the host: workspaces owned by 10001, setgid, group-writable,
    # on a shared mount (systemd's default; this CI machine's / is private).
    (data / "workspaces").mkdir(parents=True)
    shutil.chown(data / "workspaces", 10001, 10001)
    (data / "workspaces").chmod(0o2775)
    run("mount", "--bind", str(data), str(data))
    run("mount", "--make-rshared", str(data))
    ports = {name: str(free_port()) for name in PORTS}
    secrets = {name: uuid.uuid4().hex for name in ("RABBITMQ_PASSWORD", "MONGO_PASSWORD")}
    key = uuid.uuid4().hex
    env = {
        **secrets,
        **ports,
        "AUTOSCORER_ADMIN_KEY": key,
        "AUTOSCORER_DATA_DIR": str(data),
        # Docker's default address pools: the webhook receiver listens on the compose bridge.
        "AUTOSCORER_WEBHOOK_PRIVATE_TARGETS": '["172.16.0.0/12", "192.168.0.0/16"]',
    }
    env_file = base / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    stack = Stack(
        project=f"ascompose{uuid.uuid4().hex[:8]}",
        env_file=env_file,
        data_dir=data,
        url=f"http://127.0.0.1:{ports['AUTOSCORER_GATEWAY_PORT']}",
        key=key,
    )
    try:
        started = time.monotonic()
        up = subprocess.run(
            ["docker", "compose", "-p", stack.project, "--env-file", str(env_file), *FILES,
             "up", "-d", "--wait", "--pull", "never"],
            capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr[-4000:] + logs_of(stack)
        print(f"compose up: {time.monotonic() - started:.1f}s")
        yield stack
    finally:
        if stack.receiver is not None:
            stack.receiver.server.shutdown()
            stack.receiver.server.server_close()
        stack.compose("down", "-v", "--remove-orphans", timeout=180)
        run("umount", "-R", "-l", str(data), check=False)


@pytest.fixture(scope="module")
def webhooks(stack: Stack) -> Stack:
    """A subscription to the terminal events, received on the host's address on the compose
    network (private: AUTOSCORER_WEBHOOK_PRIVATE_TARGETS allows it, as API.md documents)."""
    network = f"{stack.project}_default"
    done = run("docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", network)
    host = done.stdout.strip()
    stack.receiver = start_receiver(host)
    port = stack.receiver.server.server_address[1]
    created = stack.api(
        "POST", "/v1/webhooks", {"url": f"http://{host}:{port}/hook", "event_types": list(TERMINAL)}
    )
    stack.webhook_secret = created["secret"]
    return stack


def api_md_verifier() -> Any:
    """verify_webhook exactly as docs/API.md prints it."""
    text = (ROOT / "docs" / "API.md").read_text(encoding="utf-8")
    snippet = next(
        b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "verify_webhook" in b
    )
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "API.md", "exec"), namespace)
    return namespace["verify_webhook"]


def wait_for_events(stack: Stack, job_id: str, count: int, timeout: float = 60) -> list[Any]:
    assert stack.receiver is not None
    deadline = time.monotonic() + timeout
    while len(stack.receiver.events(job_id)) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return stack.receiver.events(job_id)


# -- the tests -----------------------------------------------------------------------------------


def test_each_example_scores_through_the_composed_gateway(webhooks: Stack) -> None:
    """`autoscorer submit --wait` per example; the score equals the reference scorer's on the
    predictions the participant container wrote; each job's signed webhook verifies."""
    stack, registry, verify = webhooks, ScorerRegistry.with_builtins(), api_md_verifier()
    for example, metric in EXAMPLE_METRICS.items():
        job = stack.submit(ROOT / "examples" / example, wait=True)
        assert job["status"] == "succeeded", job
        workspace = Workspace.at(Path(job["workspace"]))
        assert workspace.root.is_relative_to(stack.data_dir / "workspaces")
        expected = score_workspace(registry, workspace, write=False).summary[metric]
        assert job["result"]["summary"][metric] == expected, example
        info = json.loads((workspace.logs_dir / "run_info.json").read_text())
        assert info["backend"] == "docker" and info["image_id"].startswith("sha256:")
        # at least once: a repeat carries the same event_id (API.md), so count distinct ones
        (event,) = {e["event_id"]: e for e in wait_for_events(stack, job["job_id"], 1)}.values()
        assert event["type"] == "score.completed"
        assert event["result"]["summary"][metric] == expected
    assert stack.receiver is not None
    for headers, body in stack.receiver.deliveries:
        assert verify(stack.webhook_secret, headers, body) is True
        assert verify(stack.webhook_secret, headers, body + b" ") is False
        assert verify_signature(stack.webhook_secret, headers, body)


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The HMAC recomputed here too, so a broken snippet cannot pass for a broken signature."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return f"v1,{digest}" in headers["webhook-signature"].split()


def slow_workspace(tmp_path: Path, seconds: int) -> Path:
    """The classification example, its participant sleeping first (a run to interrupt)."""
    workspace = tmp_path / "slow"
    shutil.copytree(ROOT / "examples" / "classification", workspace)
    meta = json.loads((workspace / "meta.json").read_text())
    meta["time_limit"] = seconds + 60
    meta["container"]["cmd"] = [
        "sh",
        "-c",
        f"sleep {seconds} && exec python3 submission/predict.py",
    ]
    (workspace / "meta.json").write_text(json.dumps(meta))
    return workspace


def test_restarting_the_executor_mid_run_finishes_the_job_once(
    webhooks: Stack, tmp_path: Path
) -> None:
    stack = webhooks
    job_id = stack.submit(slow_workspace(tmp_path, 8), wait=False)["job_id"]
    assert stack.wait_status(job_id, {"running"})["status"] == "running"
    stack.compose("restart", "executor", timeout=120)
    job = stack.wait_status(job_id, {"succeeded", "failed", "cancelled"}, timeout=180)
    assert job["status"] == "succeeded", job
    result = stack.api("GET", f"/v1/jobs/{job_id}/result")
    assert result["version"] == 1  # scored once
    assert 0.5 < result["result"]["summary"]["f1_macro"] <= 1.0
    wait_for_events(stack, job_id, 1)
    time.sleep(3)  # room for a second terminal event to show up
    events = wait_for_events(stack, job_id, 1)
    assert sorted({e["event_id"]: e["type"] for e in events}.values()) == ["score.completed"]
    log = Path(job["workspace"]) / "logs" / "job.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    done = [x for x in lines if x["event"] == "transition" and x["data"]["to_state"] == "succeeded"]
    assert len(done) == 1, lines


def test_the_store_keeps_its_jobs_across_a_mongo_restart(stack: Stack) -> None:
    """The store's data lives in the compose file's mongo-data volume, not in the container."""

    def finished() -> dict[str, str]:
        jobs = stack.api("GET", "/v1/jobs?status=succeeded&limit=50")["jobs"]
        return {job["job_id"]: job["status"] for job in jobs}

    before = finished()
    assert len(before) >= len(EXAMPLE_METRICS)
    stack.compose("restart", "mongo", timeout=120)
    deadline = time.monotonic() + 60
    while True:  # the gateway reconnects by itself
        try:
            after = finished()
            break
        except OSError:
            assert time.monotonic() < deadline, "the gateway did not reach the restarted store"
            time.sleep(0.5)
    assert after == before


def test_down_leaves_no_participant_container(stack: Stack, tmp_path: Path) -> None:
    """Runs last: `docker compose down` while a participant container runs."""
    job_id = stack.submit(slow_workspace(tmp_path, 120), wait=False)["job_id"]
    assert stack.wait_status(job_id, {"running"})["status"] == "running"
    label = f"autoscorer.job_id={job_id}"
    assert run("docker", "ps", "-aq", "--filter", f"label={label}").stdout.strip()
    started = time.monotonic()
    stack.compose("down", timeout=180)
    print(f"compose down with a run in flight: {time.monotonic() - started:.1f}s")
    assert run("docker", "ps", "-aq", "--filter", f"label={label}").stdout.strip() == ""
    # nor any other container of the compose file's executor (replica_id executor-1)
    mine = (
        "docker",
        "ps",
        "-aq",
        "--filter",
        f"label={EXECUTOR_LABEL}",
        "--filter",
        f"label={INSTANCE}",
    )
    assert run(*mine).stdout.strip() == ""
