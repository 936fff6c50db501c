"""A deadline burst: N score-only CSV uploads through the gateway's HTTP API.

    python -m bench.bench_burst [--n 2000] [--clients 16] [--modes distributed1,embedded]

Each submission is a small upload (``POST /v1/jobs``, multipart): a tar.gz workspace holding
``meta.json`` (``classification_f1``, no ``container``: score-only), the classification
example's 120-row ``input/gt.csv`` and an ``output/pred.csv`` the bench writes from it.
``--clients`` concurrent HTTP clients send them, round-robin over the gateways, as fast as the
gateways answer. A platform process answers each ``JobSubmitted`` with the ``RunCompleted`` a
platform that ran inference would send (a score-only job waits in ``queued`` for it); a webhook
for ``score.completed`` (registered once, through the API) reports each score back to a receiver
in the bench. Modes:

* ``distributedR``: the four services as separate processes (``python -m services.<x>.main``,
  ``R`` replicas of each) on RabbitMQ and the MongoDB-wire store (``--mongo-url``);
* ``embedded``: ``autoscorer serve``'s composition in one process (in-memory bus, SQLite),
  with the platform subscribed on its bus.

Reported per mode: the gateways' accept rate (uploads answered 202 per second while the burst
is sent), drain time (first upload to last score webhook), p50/p95/p99 from the start of a job's
upload to its ``ScoreCompleted`` webhook, peak RSS per service (``VmHWM``, the largest replica),
lost jobs (accepted, never scored) and duplicated ones (more than one ``ScoreCompleted`` event id
or webhook delivery), and CPU: every service process and its children (scorer pool workers)
from ``/proc``, minus the scoring itself (``score_workspace`` on the same workspace in the bench,
median CPU per job), per job, as a ratio to the scoring CPU per job. The platform process and
the bench's clients are not counted. Everything the run declared is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from bench.bench_chain import EXAMPLE, SCORER, make_workspaces, pct
from shared.config import Settings
from tests.e2e.harness import ADMIN_KEY, delete_rabbit_topology, free_port, raw_settings

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("scheduler", "executor", "scorer", "gateway")
TICKS = os.sysconf("SC_CLK_TCK")


# -- the platform: RunCompleted for every score-only JobSubmitted ---------------------------------


def platform_subscription(settings: Settings) -> Any:
    """The platform's subscription: answer a score-only ``JobSubmitted`` with ``RunCompleted``."""
    from shared.bus import Subscription
    from shared.events import Event, JobSubmitted, RunCompleted
    from shared.models import RunOutcome

    bus_box: dict[str, Any] = {}

    async def on_submitted(event: Event) -> None:
        if isinstance(event, JobSubmitted) and event.spec.container is None:
            await queued(bus_box["store"], event.job_id)
            outcome = RunOutcome(
                job_id=event.job_id, backend="platform", status="succeeded", exit_code=0
            )
            await bus_box["bus"].publish(RunCompleted(job_id=event.job_id, outcome=outcome))

    queue = f"{settings.bus.exchange.removeprefix('autoscorer.')}.platform"
    return bus_box, Subscription(queue, ["job.submitted"], on_submitted, concurrency=32)


async def queued(store: Any, job_id: str) -> None:
    """Until the scheduler has queued the job: a platform runs inference first, so its
    ``RunCompleted`` never finds the job still ``submitted`` (which the scheduler would retry
    1, 5, 30 s later, measuring the retry policy instead of the chain)."""
    from shared.jobs import JobStatus

    deadline, pause = time.monotonic() + 120, 0.05
    while time.monotonic() < deadline:
        job = await store.get(job_id)
        if job is not None and job.status is not JobStatus.SUBMITTED:
            return
        await asyncio.sleep(pause)
        pause = min(2 * pause, 1.0)  # a backlog of polls would load the store it measures


async def run_platform(settings: Settings) -> None:
    from shared.connect import make_bus, make_store

    bus = make_bus(settings.bus)
    box, subscription = platform_subscription(settings)
    box["bus"], box["store"] = bus, make_store(settings.store)
    await box["store"].init()
    await bus.subscribe(subscription)
    await bus.start()
    await asyncio.Event().wait()


async def run_embedded(settings: Settings) -> None:
    """``autoscorer serve`` with the platform subscribed on its in-memory bus (wrapping
    ``open_parts``, the one place that makes the bus, before the bus starts)."""
    from services.cli import serve as serve_module
    from services.gateway.main import open_parts as original
    from shared.runtime import stop_on_signals

    box, subscription = platform_subscription(settings)

    async def open_parts(*args: Any) -> Any:
        store, hooks, bus = await original(*args)
        box["bus"], box["store"] = bus, store
        await bus.subscribe(subscription)
        return store, hooks, bus

    vars(serve_module)["open_parts"] = open_parts  # what serve() calls
    await serve_module.serve(settings, stop_on_signals())


# -- processes and /proc ------------------------------------------------------------------------


@dataclass
class Proc:
    name: str  # service (with replica number)
    service: str
    popen: subprocess.Popen[bytes]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its live descendants, plus what its reaped children used."""
    total = 0.0
    for n, p in enumerate([pid, *descendants(pid)]):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            used = int(fields[11]) + int(fields[12])
            if n == 0:
                used += int(fields[13]) + int(fields[14])
            total += used / TICKS
    return total


def peak_rss_mib(pid: int) -> float:
    """The largest ``VmHWM`` of ``pid`` and its descendants (scorer pool workers)."""
    peaks = [0.0]
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


# -- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    mode: str
    replicas: int
    root: Path
    settings: Settings
    configs: list[Path]
    gateways: list[str]
    procs: list[Proc] = field(default_factory=list)
    platform: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, mode: str, replicas: int, root: Path, args: argparse.Namespace) -> Stack:
        distributed = mode != "embedded"
        raw = raw_settings(
            root,
            bus="rabbitmq" if distributed else "memory",
            store="mongo" if distributed else "sqlite",
            backend="local",
            rabbit_url=args.rabbit_url,
            mongo_url=args.mongo_url,
        )
        raw["scorer"]["pool_size"] = args.pool_size
        raw["gateway"]["max_upload_bytes"] = 1 << 20
        configs, gateways = [], []
        for n in range(1, replicas + 1):
            raw["gateway"]["port"] = free_port()
            raw["executor_service"]["replica_id"] = f"burst-executor-{n}"
            raw["scorer"]["replica_id"] = f"burst-scorer-{n}"
            path = root / f"config{n}.yaml"
            path.write_text(yaml.safe_dump(raw))
            configs.append(path)
            gateways.append(f"http://127.0.0.1:{raw['gateway']['port']}")
        Path(raw["gateway"]["data_root"]).mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        return cls(mode, replicas, root, Settings.model_validate(raw), configs, gateways)

    def spawn(self, name: str, argv: list[str], config: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "AUTOSCORER_CONFIG": str(config)}
        with (self.root / "logs" / f"{name}.log").open("ab") as log:
            return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    async def start(self) -> None:
        me = [sys.executable, "-m", "bench.bench_burst"]
        if self.mode == "embedded":
            popen = self.spawn("serve", [*me, "--child", "embedded"], self.configs[0])
            self.procs.append(Proc("serve", "serve", popen))
        else:
            self.platform = self.spawn("platform", [*me, "--child", "platform"], self.configs[0])
            for service in SERVICES:
                for n, config in enumerate(self.configs, 1):
                    argv = [sys.executable, "-m", f"services.{service}.main"]
                    self.procs.append(
                        Proc(f"{service}{n}", service, self.spawn(f"{service}{n}", argv, config))
                    )
        await self.wait_ready()

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession() as session:
            for url in self.gateways:
                while True:
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with session.get(url + "/readyz") as response:
                            if response.status == 200:
                                break
                    for proc in self.procs:
                        if proc.popen.poll() is not None:
                            raise SystemExit(f"{proc.name} exited: see {self.root}/logs")
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{url} not ready: see {self.root}/logs")
                    await asyncio.sleep(0.3)
        await asyncio.sleep(3.0 if self.mode != "embedded" else 0.5)  # consumers bound

    def stop(self) -> None:
        everything = [p.popen for p in self.procs] + ([self.platform] if self.platform else [])
        for popen in everything:
            if popen.poll() is None:
                popen.terminate()
        for popen in everything:
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)

    async def remove(self) -> None:
        if self.mode == "embedded":
            return
        with contextlib.suppress(Exception):
            await delete_rabbit_topology(self.settings)
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.settings.store.url.get_secret_value()
        )
        try:
            await client.drop_database(self.settings.store.database)
        finally:
            await client.close()


# -- the burst ----------------------------------------------------------------------------------


def upload_bytes(root: Path, plots: bool) -> bytes:
    """The tar.gz every client uploads: a score-only workspace of the classification example."""
    ws = make_workspaces(root / "template", 1)[0]
    meta = {
        "scorer": SCORER,
        "task_type": "classification",
        "time_limit": 60,
        "params": {"plots": plots},
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = json.dumps(meta).encode()
        info = tarfile.TarInfo("meta.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for part in ("input/gt.csv", "output/pred.csv"):
            tar.add(ws / part, arcname=part)
    return buffer.getvalue()


@dataclass
class Hooks:
    """The webhook receiver: per job, the ScoreCompleted event ids and webhook ids seen."""

    arrived: dict[str, float] = field(default_factory=dict)
    event_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    hook_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        job_id = str(body.get("job_id"))
        self.arrived.setdefault(job_id, time.perf_counter())
        self.event_ids[job_id].add(str(body.get("event_id")))
        self.hook_ids[job_id].add(request.headers.get("webhook-id", ""))
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def receiver(hooks: Hooks) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", hooks.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


@dataclass
class Outcome:
    mode: str
    n: int
    accepted: int
    refused: dict[str, int]
    accept_s: float
    drain_s: float
    latencies: list[float]
    lost: int
    duplicated: int
    cpu_s: dict[str, float]
    rss_mib: dict[str, float]
    score_cpu_s: float


async def burst(stack: Stack, args: argparse.Namespace, archive: bytes) -> Outcome:
    hooks = Hooks()
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with receiver(hooks) as hook_url, aiohttp.ClientSession(headers=headers) as session:
        body = {"url": hook_url, "event_types": ["score.completed"]}
        async with session.post(stack.gateways[0] + "/v1/webhooks", json=body) as response:
            assert response.status in (200, 201), await response.text()
        cpu0 = {p.name: cpu_seconds(p.popen.pid) for p in stack.procs}
        started: dict[str, float] = {}
        refused: dict[str, int] = defaultdict(int)
        todo = list(range(args.n))
        t0 = time.perf_counter()

        async def client() -> None:
            while todo:
                n = todo.pop()
                form = aiohttp.FormData()
                form.add_field("archive", archive, filename=f"sub{n}.tar.gz")
                at = time.perf_counter()
                try:
                    async with session.post(
                        stack.gateways[n % len(stack.gateways)] + "/v1/jobs", data=form
                    ) as response:
                        answer = await response.json(content_type=None)
                        status = response.status
                except (aiohttp.ClientError, OSError) as exc:
                    refused[type(exc).__name__] += 1
                    continue
                if status == 202:
                    started[answer["data"]["job_id"]] = at
                else:
                    refused[f"{status} {answer.get('error', {}).get('code')}"] += 1

        await asyncio.gather(*(client() for _ in range(args.clients)))
        accept_s = time.perf_counter() - t0
        deadline = time.monotonic() + args.timeout
        while len(set(started) & set(hooks.arrived)) < len(started):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        drain_s = max(hooks.arrived.values(), default=t0) - t0
        await asyncio.sleep(2.0)  # a duplicate delivery would show by now
        cpu = {p.name: cpu_seconds(p.popen.pid) - cpu0[p.name] for p in stack.procs}
        rss = {p.name: peak_rss_mib(p.popen.pid) for p in stack.procs}
    latencies = [hooks.arrived[j] - at for j, at in started.items() if j in hooks.arrived]
    duplicated = sum(
        1 for j in started if len(hooks.event_ids[j]) > 1 or len(hooks.hook_ids[j]) > 1
    )
    return Outcome(
        f"{stack.mode}",
        args.n,
        len(started),
        dict(refused),
        accept_s,
        drain_s,
        latencies,
        len(set(started) - set(hooks.arrived)),
        duplicated,
        cpu,
        rss,
        0.0,
    )


def scoring_cpu_per_job(root: Path, plots: bool) -> float:
    """Median CPU seconds of scoring one burst workspace (result.json written), in process."""
    from services.scorer.engine import score_workspace
    from services.scorer.plugins import registry_from_settings
    from shared.config import ScorerSettings
    from shared.workspace import Workspace

    section = ScorerSettings.model_validate({"plugin_dir": str(root / "scorers")})
    registry = registry_from_settings(section)
    spaces = make_workspaces(root / "cpu", 30)
    times = []
    for ws in spaces:
        started = time.process_time()
        score_workspace(registry, Workspace.at(ws), scorer=SCORER, params={"plots": plots})
        times.append(time.process_time() - started)
    return statistics.median(times[5:])


async def run_mode(mode: str, args: argparse.Namespace, score_cpu: float) -> Outcome:
    replicas = 1 if mode == "embedded" else int(mode.removeprefix("distributed"))
    with tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp:
        root = Path(tmp)
        stack = Stack.create(mode, replicas, root, args)
        archive = upload_bytes(root, args.plots)
        try:
            await stack.start()
            outcome = await burst(stack, args, archive)
        finally:
            stack.stop()
            await stack.remove()
    outcome.mode = mode
    outcome.score_cpu_s = score_cpu
    return outcome


def report(outcomes: list[Outcome]) -> None:
    print(
        "\nlatency = start of the upload -> its ScoreCompleted webhook; CPU = all service "
        "processes and children, platform = total - scoring (in-process score_workspace CPU)\n"
    )
    print(
        f"{'mode':<13} {'n':>5} {'ok':>5} {'accept/s':>8} {'drain s':>7} {'p50 s':>6} "
        f"{'p95 s':>6} {'p99 s':>6} {'lost':>4} {'dup':>3} {'CPU/job ms':>10} "
        f"{'score ms':>8} {'platform/score':>14}"
    )
    for o in outcomes:
        total = sum(o.cpu_s.values())
        jobs = max(o.accepted, 1)
        platform = (total - jobs * o.score_cpu_s) / jobs
        lat = o.latencies or [float("nan")]
        print(
            f"{o.mode:<13} {o.n:>5} {o.accepted:>5} {o.accepted / o.accept_s:>8.1f} "
            f"{o.drain_s:>7.1f} {pct(lat, 0.5):>6.2f} {pct(lat, 0.95):>6.2f} "
            f"{pct(lat, 0.99):>6.2f} {o.lost:>4} {o.duplicated:>3} "
            f"{1000 * total / jobs:>10.1f} {1000 * o.score_cpu_s:>8.1f} "
            f"{platform / o.score_cpu_s:>14.1f}"
        )
    for o in outcomes:
        by_service: dict[str, list[float]] = defaultdict(list)
        for name, seconds in o.cpu_s.items():
            by_service[name.rstrip("0123456789")].append(seconds)
        jobs = max(o.accepted, 1)
        cpu = ", ".join(f"{s} {1000 * sum(v) / jobs:.1f}" for s, v in by_service.items())
        rss = ", ".join(f"{name} {mib:.0f}" for name, mib in o.rss_mib.items())
        print(f"\n{o.mode}: CPU ms/job by service: {cpu}\n  peak RSS MiB: {rss}")
        if o.refused:
            print(f"  refused or failed uploads: {o.refused}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="submissions")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--modes", default="distributed1,distributed2,embedded")
    parser.add_argument("--pool-size", type=int, default=1, help="scorer worker processes")
    parser.add_argument(
        "--plots",
        action="store_true",
        help="the scorer also renders its PNG plots (~150 ms CPU a job)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to drain")
    parser.add_argument(
        "--rabbit-url",
        default=os.environ.get(
            "AUTOSCORER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"
        ),
    )
    parser.add_argument(
        "--mongo-url",
        default=os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017"),
    )
    parser.add_argument("--child", choices=("platform", "embedded"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from shared.runtime import settings_from_env

        settings = settings_from_env()
        asyncio.run(run_platform(settings) if args.child == "platform" else run_embedded(settings))
        return
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
        f"{args.n} uploads from {args.clients} clients; example {EXAMPLE.name}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-burst-cpu-") as tmp:
        score_cpu = scoring_cpu_per_job(Path(tmp), args.plots)
    outcomes: list[Outcome] = []
    for mode in args.modes.split(","):
        began = time.perf_counter()
        outcome = asyncio.run(run_mode(mode, args, score_cpu))
        outcomes.append(outcome)
        print(f"  {mode}: {outcome.accepted} accepted, {time.perf_counter() - began:.1f} s")
    report(outcomes)


if __name__ == "__main__":
    main()
