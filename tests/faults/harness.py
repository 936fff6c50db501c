"""The real stack as four processes, and what a fault test needs around it.

``FaultStack`` runs the gateway, scheduler, executor and scorer services as separate processes
(``python -m services.<name>.main``, one YAML config) on RabbitMQ, a MongoDB-wire store (FerretDB)
and Docker, on names of their own (exchange, queues, database, container label). It can SIGKILL
and restart each of them. Around it:

* ``HookReceiver``: a webhook receiver on 127.0.0.1 in a thread (it outlives every service kill);
* ``Tap``: an exclusive queue bound to ``#`` on the stack's exchange: every event published, so a
  test can count terminal events per ``event_id``;
* ``Api``: HTTP calls to the gateway with the admin key;
* ``check_ended_once``: the promise of docs/RELIABILITY.md for one job: one terminal state, one
  terminal event per ``event_id``, one webhook delivery;
* ``queue_counts``: messages and consumers per queue by passive ``queue_declare`` (no management
  plugin needed).

The process side is synchronous (a module-scoped fixture can own it); the async helpers take the
test's own loop. ``run_async`` runs a coroutine on a private loop in a thread, for sync code.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import yaml
from aio_pika.abc import AbstractIncomingMessage

from shared.config import Settings
from tests.e2e.harness import ADMIN_KEY, EXAMPLES, delete_rabbit_topology, raw_settings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "scheduler", "executor", "scorer")
TERMINAL = ("succeeded", "failed", "cancelled")
TERMINAL_EVENT = {
    "succeeded": "score.completed",
    "failed": "job.failed",
    "cancelled": "job.cancelled",
}
EXAMPLE_IMAGE = "autoscorer-examples/classification:1"
BASE_IMAGE = "autoscorer-test/python:3.11"

T = TypeVar("T")
MakeStack = Callable[..., Awaitable["FaultStack"]]
"""The ``make_stack`` fixture: ``await make_stack(tweak=..., scorer_delay=...)``."""

SLOW_SCORER = '''"""classification_f1 after SLOW_S seconds: a scoring a test can kill midway."""

import time

import services.scorer.builtin.classification as _builtin
from shared.scoring import register

SLOW_S = {delay}


@register(
    "slow_f1",
    version="1.0.0",
    task_type="classification",
    description="classification_f1 after a pause",
    expected_files=("input/gt.csv", "output/pred.csv"),
    primary_metric="f1_macro",
)
def slow_f1(ws, params):
    time.sleep(SLOW_S)
    f1 = _builtin.classification_f1
    return f1.fn(ws, f1.params_model())
'''


def run_async(make: Callable[[], Awaitable[T]], timeout: float = 300) -> T:
    """Run a coroutine on its own loop in a thread (safe from sync fixtures and sync code)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(asyncio.wait_for(make(), timeout))
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def build_example_image() -> str:
    """The classification example's participant image on the local base image (cached)."""
    subprocess.run(
        [
            "docker",
            "build",
            "-q",
            "--build-arg",
            f"BASE={BASE_IMAGE}",
            "-t",
            EXAMPLE_IMAGE,
            str(EXAMPLES / "classification" / "submission"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return EXAMPLE_IMAGE


# --- webhooks ---------------------------------------------------------------------------------


@dataclass
class HookReceiver:
    """Answers 204 to every POST on 127.0.0.1 and keeps (headers, body); thread-safe."""

    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> str:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.deliveries.append((headers, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def for_job(self, job_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(webhook-id, event) of every delivery about ``job_id``, repeats included."""
        with self._lock:
            found = [(h.get("webhook-id", ""), json.loads(b)) for h, b in self.deliveries]
        return [(hook_id, event) for hook_id, event in found if event.get("job_id") == job_id]


# --- the processes ----------------------------------------------------------------------------


@dataclass
class FaultStack:
    """Four service processes on their own exchange, queues and database."""

    root: Path
    settings: Settings
    config_file: Path
    receiver: HookReceiver
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        root: Path,
        rabbit_url: str,
        mongo_url: str,
        *,
        backend: str = "docker",
        scorer_delay: float = 1.5,
        tweak: Callable[[dict[str, Any]], None] | None = None,
    ) -> FaultStack:
        """Write the config (``tweak`` may edit the raw settings) and the slow scorer plugin."""
        raw = raw_settings(
            root,
            bus="rabbitmq",
            store="mongo",
            backend=backend,
            rabbit_url=rabbit_url,
            mongo_url=mongo_url,
        )
        prefix = raw["bus"]["exchange"].removeprefix("autoscorer.")
        plugins = root / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        (plugins / "slow_f1.py").write_text(SLOW_SCORER.format(delay=scorer_delay))
        raw["executor"] = {
            "default_backend": backend,
            "backends": {
                "local": {"type": "local"},
                "docker": {"type": "docker", "instance": prefix},
            },
        }
        raw["executor_service"].update(
            replica_id=f"{prefix}-executor", heartbeat_s=1.0, grace_s=2.0
        )
        raw["scorer"].update(
            plugin_paths=[str(plugins)], replica_id=f"{prefix}-scorer", grace_s=2.0
        )
        raw["scheduler"].update(lease_ttl_s=10.0)
        # a delivery claimed by a gateway that then died goes out when its claim ends
        # (timeout_s + 30 s): keep that inside wait_webhook's minute
        raw["gateway"]["webhooks"]["timeout_s"] = 5.0
        if tweak is not None:
            tweak(raw)
        config = root / "stack.yaml"
        config.write_text(yaml.safe_dump(raw))
        (root / "logs").mkdir(exist_ok=True)
        return cls(root, Settings.model_validate(raw), config, HookReceiver())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway.port}"

    @property
    def prefix(self) -> str:
        return self.settings.bus.exchange.removeprefix("autoscorer.")

    def queue_of(self, service: str) -> str:
        """The queue a service consumes (its consumer shows it is up)."""
        s = self.settings
        return {
            "gateway": s.gateway.webhook_queue,
            "scheduler": s.scheduler.queue,
            "executor": f"{s.executor_service.queue_prefix}executor.{s.executor_service.backend}",
            "scorer": f"{s.scorer.queue_prefix}scorer.requests",
        }[service]

    def log_path(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    def log_tail(self, service: str, chars: int = 3000) -> str:
        path = self.log_path(service)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- process control (sync) --

    def config_of(self, service: str) -> Path:
        """The config a service's process reads (a subclass may give replicas their own)."""
        return self.config_file

    def spawn(self, service: str) -> None:
        env = {**os.environ, "AUTOSCORER_CONFIG": str(self.config_of(service))}
        with self.log_path(service).open("ab") as log:
            self.procs[service] = subprocess.Popen(
                [sys.executable, "-m", f"services.{service.partition('.')[0]}.main"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, service: str) -> None:
        """SIGKILL: no shutdown code runs, unacknowledged deliveries go back to the broker."""
        proc = self.procs[service]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def alive(self, service: str) -> bool:
        proc = self.procs.get(service)
        return proc is not None and proc.poll() is None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    # -- readiness and lifecycle (async, on the caller's loop) --

    async def consumers(self, queue: str) -> int:
        """Consumers on ``queue``; -1 while the broker does not answer (it may be restarting)."""
        if not await broker_greets(self.settings.bus.url.get_secret_value()):
            return -1  # aiormq leaks the socket of a connect that fails midway: do not try
        try:
            counts = await queue_counts(self.settings.bus.url.get_secret_value(), [queue])
        except (aio_pika.exceptions.AMQPError, OSError):
            return -1
        return counts[queue][1]

    async def wait_ready(self, service: str, timeout: float = 180) -> None:
        # 180 s, not 90: in a full CI run, after the conftest guard had reset a wedged RabbitMQ
        # 3.10.8, every restarted gateway's consumer took 60-70 s to show (5 s when the broker is
        # healthy) and one crossed 90 s; a service that never comes up still fails here.
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs[service]
            if proc.poll() is not None:
                raise AssertionError(
                    f"{service} exited {proc.returncode}:\n{self.log_tail(service)}"
                )
            if await self.consumers(self.queue_of(service)) > 0 and (
                service != "gateway" or await self._gateway_ready()
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} not ready:\n{self.log_tail(service)}")
            await asyncio.sleep(0.2)

    async def _gateway_ready(self) -> bool:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with aiohttp.ClientSession() as session, session.get(self.url + "/readyz") as r:
                return r.status == 200
        return False

    async def restart(self, service: str, *, pause: float = 0.0) -> None:
        """Kill (if alive), wait until the broker dropped its consumer, start again, wait ready."""
        if self.alive(service):
            self.kill(service)
        queue = self.queue_of(service)
        for _ in range(50):
            if await self.consumers(queue) <= 0:
                break
            await asyncio.sleep(0.1)
        if pause:
            await asyncio.sleep(pause)
        self.spawn(service)
        self.restarts[service] = self.restarts.get(service, 0) + 1
        await self.wait_ready(service)

    async def ensure_up(self) -> None:
        """Start what is not running (a previous test may have failed before its restart)."""
        for service in SERVICES:
            if not self.alive(service):
                self.spawn(service)
        for service in SERVICES:
            await self.wait_ready(service)

    async def start(self) -> None:
        self.settings.gateway.data_root.mkdir(parents=True, exist_ok=True)
        hook_url = self.receiver.start()
        # the consumers declare the topology; the scheduler first so nothing is unroutable
        for service in ("scheduler", "executor", "scorer", "gateway"):
            self.spawn(service)
            await self.wait_ready(service)
        async with aiohttp.ClientSession() as session:
            await Api(session, self.url).call(
                "POST",
                "/v1/webhooks",
                json={"url": hook_url, "event_types": list(TERMINAL_EVENT.values())},
            )

    async def remove_topology(self) -> None:
        with contextlib.suppress(Exception):
            await delete_rabbit_topology(self.settings)
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.settings.store.url.get_secret_value(), serverSelectionTimeoutMS=5000
        )
        try:
            with contextlib.suppress(Exception):
                await client.drop_database(self.settings.store.database)
        finally:
            await client.close()

    def close(self) -> None:
        self.stop_all()
        self.receiver.stop()
        run_async(self.remove_topology, timeout=120)

    # -- workspaces --

    def add_workspace(
        self,
        name: str | None = None,
        *,
        sleep_s: float = 0.0,
        scorer: str = "slow_f1",
        exit_code: int | None = None,
    ) -> str:
        """A copy of examples/classification under data_root; its run sleeps ``sleep_s`` first,
        or exits ``exit_code`` (a participant failure) instead of predicting."""
        name = name or f"ws-{uuid.uuid4().hex[:8]}"
        target = self.settings.gateway.data_root / name
        shutil.copytree(
            EXAMPLES / "classification",
            target,
            ignore=shutil.ignore_patterns("output", "logs", ".autoscorer"),
        )
        meta = json.loads((target / "meta.json").read_text())
        meta["scorer"] = scorer
        run = "python3 submission/predict.py" if exit_code is None else f"exit {exit_code}"
        meta["container"]["cmd"] = ["sh", "-c", f"sleep {sleep_s} && {run}"]
        (target / "meta.json").write_text(json.dumps(meta))
        return name


# --- HTTP -------------------------------------------------------------------------------------


@dataclass
class Api:
    session: aiohttp.ClientSession
    url: str
    key: str = ADMIN_KEY

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        async with self.session.request(method, self.url + path, headers=headers, **kw) as resp:
            return resp.status, await resp.json(content_type=None)

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        status, body = await self.request(method, path, **kw)
        assert body.get("ok"), (status, body)
        return body["data"]

    async def submit(self, workspace: str, **kw: Any) -> str:
        data = await self.call("POST", "/v1/jobs", json={"workspace": workspace, **kw})
        return str(data["job_id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/v1/jobs/{job_id}"))

    async def wait_terminal(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        """The job once terminal; retries while the gateway is down or restarting."""
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError, AssertionError):
                job = await self.job(job_id)
                if job["status"] in TERMINAL:
                    return job
            await asyncio.sleep(0.3)
        raise AssertionError(f"{job_id} still {job.get('status')} after {timeout}s: {job}")


# --- the tap ----------------------------------------------------------------------------------


@dataclass
class Tapped:
    routing_key: str
    body: bytes
    message_id: str | None

    @property
    def event(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class Tap:
    """Every message published on the exchange from now on: a queue bound to ``#``, exclusive
    (gone with the connection), or durable when named (``queue``: it keeps what is published
    while the tap reconnects after a broker restart, and is deleted on exit)."""

    def __init__(self, url: str, exchange: str, queue: str | None = None) -> None:
        self.url, self.exchange_name, self.queue_name = url, exchange, queue
        self.seen: list[Tapped] = []
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None
        self._queue: aio_pika.abc.AbstractQueue
        self._consumer = ""

    async def __aenter__(self) -> Tap:
        self._connection = await aio_pika.connect_robust(self.url, reconnect_interval=0.5)
        channel = await self._connection.channel(publisher_confirms=True)
        self.exchange = await channel.get_exchange(self.exchange_name)
        if self.queue_name is None:
            queue = await channel.declare_queue(exclusive=True)
        else:
            queue = await channel.declare_queue(
                self.queue_name, durable=True, arguments={"x-queue-type": "quorum"}
            )
        await queue.bind(self.exchange_name, routing_key="#")
        self._queue = queue
        self._consumer = await queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is None:
            return
        try:
            if self.queue_name is not None:
                await self._queue.cancel(self._consumer)
                await self._queue.delete(if_unused=False, if_empty=False)
        finally:
            await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.seen.append(Tapped(message.routing_key or "", message.body, message.message_id))

    def of_job(self, job_id: str, key: str | None = None) -> list[Tapped]:
        return [
            t
            for t in self.seen
            if t.event.get("job_id") == job_id
            and (key is None or t.routing_key == key or t.routing_key.startswith(key + "."))
        ]

    async def wait_for(self, job_id: str, key: str, timeout: float = 90) -> Tapped:
        deadline = time.monotonic() + timeout
        while not (found := self.of_job(job_id, key)):
            assert time.monotonic() < deadline, f"no {key} for {job_id} in {timeout}s"
            await asyncio.sleep(0.05)
        return found[0]

    async def publish_raw(self, tapped: Tapped) -> None:
        """Publish a tapped message again, byte for byte (same event_id): a duplicate."""
        assert self.exchange is not None
        await self.exchange.publish(
            aio_pika.Message(
                tapped.body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=tapped.message_id,
                type=tapped.routing_key.split(".")[0],
            ),
            routing_key=tapped.routing_key,
        )


async def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)}: {err.decode()}"
    return out.decode()


async def restart_broker(down_s: float = 3.0) -> None:
    """Stop the shared RabbitMQ's application for ``down_s`` seconds and start it again: only
    for tests marked ``broker_restart``."""
    await rabbitmqctl("stop_app")
    try:
        await asyncio.sleep(down_s)
    finally:
        await rabbitmqctl("start_app")
        await rabbitmqctl("await_startup")


# --- checks -----------------------------------------------------------------------------------


async def broker_greets(url: str, timeout: float = 5.0) -> bool:
    """The broker answers an AMQP protocol header (a bare TCP check, no client library)."""
    parsed = urlsplit(url)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 5672), timeout
        )
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"AMQP\x00\x00\x09\x01")
        return await asyncio.wait_for(reader.read(1), timeout) == b"\x01"
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def queue_counts(
    url: str, names: Iterable[str], *, patience: float = 0.0
) -> dict[str, tuple[int, int]]:
    """(messages, consumers) per queue by passive declare; a missing queue counts (0, 0).
    With ``patience``, a broker that does not answer (restarted by someone) is waited for that
    long before the error is raised; end-of-test checks pass 90 s."""
    names = list(names)
    deadline = time.monotonic() + patience
    while True:
        try:
            if await broker_greets(url):
                return await _queue_counts(url, names)
        except (aio_pika.exceptions.AMQPError, OSError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"RabbitMQ on port {urlsplit(url).port or 5672} does not answer")
        await asyncio.sleep(1.0)


async def _queue_counts(url: str, names: list[str]) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    connection = await aio_pika.connect(url)
    async with connection:
        for name in names:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                result = queue.declaration_result
                counts[name] = (result.message_count or 0, result.consumer_count or 0)
            except aio_pika.exceptions.ChannelClosed:
                counts[name] = (0, 0)
            finally:
                if not channel.is_closed:
                    await channel.close()
    return counts


async def stack_queue_names(prefix: str, patience: float = 90.0) -> list[str]:
    """Every queue whose name starts with ``prefix`` (rabbitmqctl lists names only). A broker
    that is restarting is waited for up to ``patience`` seconds; none found is an error (the
    stack declared some), so a check over these names is never vacuous."""
    deadline = time.monotonic() + patience
    while True:
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
        names = sorted(n for n in out.decode().split() if n.startswith(prefix))
        if listing.returncode == 0 and names:
            return names
        if time.monotonic() > deadline:
            raise AssertionError(
                f"rabbitmqctl listed no queue of {prefix} (exit {listing.returncode})"
            )
        await asyncio.sleep(2.0)


def terminal_event_ids(tap: Tap, job: dict[str, Any]) -> set[str]:
    key = TERMINAL_EVENT[job["status"]]
    return {str(t.event.get("event_id")) for t in tap.of_job(job["job_id"], key)}


def check_ended_once(job: dict[str, Any], tap: Tap, receiver: HookReceiver) -> list[str]:
    """What breaks the promise for one terminal job (empty when kept): one terminal state in its
    history, one terminal event per event_id on the bus (no other terminal kind), one webhook
    delivery (one webhook-id, carrying that event)."""
    problems = []
    job_id = job["job_id"]
    ends = [h["status"] for h in job["history"] if h["status"] in TERMINAL]
    if ends != [job["status"]]:
        problems.append(f"{job_id}: terminal entries {ends} in history")
    ids = terminal_event_ids(tap, job)
    if len(ids) != 1:
        problems.append(f"{job_id}: {len(ids)} distinct {TERMINAL_EVENT[job['status']]} event ids")
    for status, key in TERMINAL_EVENT.items():
        if status != job["status"] and key != "score.completed" and tap.of_job(job_id, key):
            problems.append(f"{job_id} is {job['status']} but {key} was published")
    key = TERMINAL_EVENT[job["status"]]
    hooks = {
        hook_id: ev["event_id"] for hook_id, ev in receiver.for_job(job_id) if ev["type"] == key
    }
    if len(hooks) != 1:
        problems.append(f"{job_id}: {len(hooks)} distinct {key} webhook deliveries")
    elif set(hooks.values()) != ids:
        problems.append(f"{job_id}: webhook carried {set(hooks.values())}, bus had {ids}")
    return problems


async def leftover_containers(job_id: str, timeout: float = 15) -> list[str]:
    """The job's containers still on the engine after ``timeout`` seconds (none expected)."""
    import aiodocker

    deadline = time.monotonic() + timeout
    async with aiodocker.Docker() as docker:
        while True:
            found = await docker.containers.list(
                all=True, filters={"label": [f"autoscorer.job_id={job_id}"]}
            )
            if not found or time.monotonic() > deadline:
                return [str(c.id)[:12] for c in found]
            await asyncio.sleep(0.5)


async def wait_webhook(
    receiver: HookReceiver, job: dict[str, Any], timeout: float = 60, settle: float = 1.0
) -> None:
    """Until the job's terminal webhook arrived (then ``settle`` seconds for a duplicate)."""
    key = TERMINAL_EVENT[job["status"]]
    deadline = time.monotonic() + timeout
    while not any(ev["type"] == key for _, ev in receiver.for_job(job["job_id"])):
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)
    await asyncio.sleep(settle)
