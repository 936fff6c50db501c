"""The whole platform in one test: the four services (``autoscorer serve``'s composition), a
webhook receiver on 127.0.0.1, and helpers to submit over HTTP and wait for the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.cli.serve import serve
from services.gateway.webhooks import signing
from shared.config import Settings
from shared.events import ScoreCompleted

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_METRICS = {
    "classification": "f1_macro",
    "classification-acc": "accuracy",
    "regression": "rmse",
    "detection": "mAP",
}
ADMIN_KEY = "e2e-admin-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(tmp: Path, **options: str) -> Settings:
    return Settings.model_validate(raw_settings(tmp, **options))


def raw_settings(
    tmp: Path,
    *,
    bus: str = "memory",
    store: str = "sqlite",
    backend: str = "local",
    mongo_url: str = "",
    rabbit_url: str = "",
) -> dict[str, Any]:
    prefix = f"e2e{uuid.uuid4().hex[:10]}"
    raw: dict[str, Any] = {
        "gateway": {
            "port": free_port(),
            "data_root": str(tmp / "data"),
            "api_keys": [{"key": ADMIN_KEY, "subject": "ops", "role": "admin"}],
            "webhooks": {"allow_private_targets": ["127.0.0.1"], "retry_delays_s": [0.2, 0.5, 1]},
            "webhook_queue": f"{prefix}.gateway.webhooks",
        },
        "store": {"kind": store, "sqlite_path": str(tmp / "jobs.sqlite3"), "database": prefix},
        "bus": {"kind": bus, "exchange": f"autoscorer.{prefix}"},
        "scheduler": {
            "queue": f"{prefix}.scheduler.jobs",
            "backend_order": [backend],
            "enabled_backends": [backend],
            "relay_interval_s": 0.2,
            "lease_check_interval_s": 0.5,
        },
        "executor_service": {"backend": backend, "queue_prefix": f"{prefix}.", "heartbeat_s": 1.0},
        "scorer": {
            "queue_prefix": f"{prefix}.",
            "plugin_dir": str(tmp / "scorers"),
            "pool_size": 1,
        },
    }
    if mongo_url:
        raw["store"]["url"] = mongo_url
    if rabbit_url:
        raw["bus"]["url"] = rabbit_url
    return raw


@dataclass
class Receiver:
    secret: str = ""
    events: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.events.append((dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=204)

    def verified_scores(self) -> dict[str, ScoreCompleted]:
        found = {}
        for headers, body in self.events:
            assert signing.verify(
                self.secret,
                headers["webhook-id"],
                int(headers["webhook-timestamp"]),
                body,
                headers["webhook-signature"],
            ), "bad webhook signature"
            event = ScoreCompleted.model_validate_json(body)
            found[event.job_id] = event
        return found


@dataclass
class Platform:
    settings: Settings
    url: str
    session: aiohttp.ClientSession
    receiver: Receiver

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with self.session.request(method, self.url + path, headers=headers, **kw) as resp:
            body = await resp.json()
        assert body["ok"], body
        return body["data"]

    def add_workspace(self, example: str, name: str | None = None) -> str:
        name = name or example
        target = self.settings.gateway.data_root / name
        shutil.copytree(
            EXAMPLES / example,
            target,
            ignore=shutil.ignore_patterns("output", "logs", ".autoscorer"),
        )
        return name

    async def submit(self, workspace: str) -> str:
        data = await self.call("POST", "/v1/jobs", json={"workspace": workspace})
        return str(data["job_id"])

    async def wait(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            job = await self.call("GET", f"/v1/jobs/{job_id}")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return dict(job)
            assert asyncio.get_running_loop().time() < deadline, (
                f"{job_id} stuck in {job['status']}"
            )
            await asyncio.sleep(0.2)

    async def wait_for_webhooks(self, count: int, timeout: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.receiver.events) < count:
            assert asyncio.get_running_loop().time() < deadline, (
                f"{len(self.receiver.events)} webhooks"
            )
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_platform(settings: Settings) -> AsyncIterator[Platform]:
    settings.gateway.data_root.mkdir(parents=True, exist_ok=True)
    receiver = Receiver()
    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver.handle)
    hook_server = TestServer(hook_app, host="127.0.0.1")
    await hook_server.start_server()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    url = f"http://127.0.0.1:{settings.gateway.port}"
    async with aiohttp.ClientSession() as session:
        platform = Platform(settings, url, session, receiver)
        try:
            for _ in range(200):
                if task.done():
                    task.result()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/readyz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
            sub = await platform.call(
                "POST",
                "/v1/webhooks",
                json={
                    "url": f"http://127.0.0.1:{hook_server.port}/hook",
                    "event_types": ["score.completed"],
                },
            )
            receiver.secret = sub["secret"]
            yield platform
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
            await hook_server.close()
            if settings.bus.kind == "rabbitmq":
                await delete_rabbit_topology(settings)


async def delete_rabbit_topology(settings: Settings) -> None:
    """Drop the test's quorum queues (main, retry, dead-letter) and its exchange."""
    prefix = settings.bus.exchange.removeprefix("autoscorer.")
    listing = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(listing.communicate(), 60)
    names = [n for n in out.decode().split() if n.startswith(prefix)]
    connection = await aio_pika.connect(settings.bus.url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
        await channel.exchange_delete(settings.bus.exchange)
