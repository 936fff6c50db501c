"""Score-only jobs through the whole event chain, next to a raw broker round trip.

Run ``python -m bench.bench_chain`` for three rows: the real stack (RabbitMQ + MongoDB wire, i.e.
FerretDB here), RabbitMQ with the SQLite store (a diagnostic, not a deployment: it separates the
broker's share from the store's), and the embedded mode (in-memory bus + SQLite). Pick one
configuration with ``--bus`` / ``--store``. Default: 100 jobs, 4 in flight (under a minute on 2
shared cores).

What is measured, per configuration, in one process:

* the scheduler, executor (local) and scorer services composed as ``autoscorer serve`` does (no
  gateway: the chain does not need it), on per-run queue, exchange and database names;
* ``--jobs`` score-only jobs (a ``JobSubmitted`` whose spec has no ``container``), each on its own
  small workspace (the classification example's 120-row ``gt.csv`` and a ``pred.csv`` the bench
  writes from it, hard-linked). First all
  of them are submitted and the bench waits until each is ``queued`` (not timed per job: the intake
  rate is printed as a side note); then
* the timed part: ``--concurrency`` workers, each publishing a platform's ``RunCompleted`` for one
  job and waiting for its ``ScoreCompleted`` on a tap queue, then the next job. **Latency = from
  just before the ``RunCompleted`` publish to the ``ScoreCompleted`` delivery on the tap.** Jobs/s
  = jobs / wall time of that part;
* the floor, in the same run on the same broker: a raw aio-pika publish (persistent, mandatory,
  publisher confirms: what the bus does) to a quorum queue (what the services consume from) and
  its delivery to a consumer, one message at a time; the median times the hops the chain makes
  between the two timestamps: RunCompleted -> scheduler, ScoreRequested -> scorer, ScoreCompleted
  -> tap (3; ScoreCompleted -> scheduler runs in parallel, off the measured path). On the in-memory
  bus the floor is the same round trip through ``MemoryBus``.

The profile printed below the table says where the time goes: the scheduler's job store calls
(count and mean per job, timed part plus the final ``scoring -> succeeded``), on MongoDB-wire
servers the driver's commands (pymongo command monitoring: lock inserts/deletes show up there),
the same store calls made one at a time on the same server before the load, how late the shared
event loop wakes up, and the scorer's own timing. The first jobs' histories are checked against
docs/SERVICES.md (``submitted, queued, running, scoring, succeeded``, one attempt, empty outbox).
Everything the run declared (queues, exchange, database) is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from pymongo import monitoring

from services.executor.main import create_executor_service
from services.executor.registry import create_executor
from services.scheduler.main import create_scheduler
from services.scorer.engine import score_workspace
from services.scorer.main import create_scorer_service
from services.scorer.plugins import registry_from_settings
from shared.bus import EventBus, Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings, backend_config
from shared.connect import make_bus, make_store
from shared.errors import ErrorCode, ErrorInfo, Fault, Stage
from shared.events import (
    BaseEvent,
    Event,
    JobFailed,
    JobSubmitted,
    RunCompleted,
    ScoreCompleted,
    encode_event,
)
from shared.jobs import JobStatus, new_job
from shared.metrics import Metrics, instrument_store
from shared.models import JobSpec, RunOutcome
from shared.outbox import outbox_entry
from shared.store import JobStore
from shared.store_mongo import MongoJobStore
from shared.workspace import Workspace
from tests.e2e.harness import delete_rabbit_topology

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "classification"
HOPS = 3  # RunCompleted -> scheduler, ScoreRequested -> scorer, ScoreCompleted -> tap
SCORER = "classification_f1"
FLOOR_ERROR = ErrorInfo(
    code=ErrorCode.EXEC_ERROR,
    stage=Stage.EXECUTION,
    message="floor",
    fault=Fault.PLATFORM,
    retryable=False,
)


# -- helpers --------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def make_settings(tmp: Path, bus: str, store: str, args: argparse.Namespace) -> Settings:
    """Per-run names, as tests/e2e/harness.py makes them (prefix ``chain<hex>``)."""
    prefix = f"chain{uuid.uuid4().hex[:10]}"
    raw: dict[str, Any] = {
        "store": {
            "kind": store,
            "url": args.mongo_url,
            "database": prefix,
            "sqlite_path": str(tmp / "jobs.sqlite3"),
        },
        "bus": {"kind": bus, "url": args.rabbit_url, "exchange": f"autoscorer.{prefix}"},
        "scheduler": {"queue": f"{prefix}.scheduler.jobs"},
        "executor_service": {"backend": "local", "queue_prefix": f"{prefix}."},
        "scorer": {
            "queue_prefix": f"{prefix}.",
            "plugin_dir": str(tmp / "scorers"),
            "pool_size": args.pool_size,
        },
        "gateway": {"data_root": str(tmp / "data")},
    }
    return Settings.model_validate(raw)


def write_prediction(gt: Path, pred: Path) -> None:
    """A participant's ``pred.csv`` for ``gt``: every fifth label replaced by the next row's
    (deterministic, so the bench needs no run of the example on a fresh clone)."""
    rows = gt.read_text(encoding="utf-8").splitlines()
    header, body = rows[0], [row.split(",", 1) for row in rows[1:] if row]
    labels = [label for _, label in body]
    lines = [header]
    for i, (row_id, label) in enumerate(body):
        lines.append(f"{row_id},{labels[(i + 1) % len(labels)] if i % 5 == 0 else label}")
    pred.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_workspaces(root: Path, count: int) -> list[Path]:
    """``count`` workspaces sharing the example's gt.csv and one prediction (hard links)."""
    gt, pred = EXAMPLE / "input" / "gt.csv", root / "pred.csv"
    root.mkdir(parents=True, exist_ok=True)
    write_prediction(gt, pred)
    spaces = []
    for i in range(count):
        ws = root / f"ws{i:05d}"
        (ws / "input").mkdir(parents=True)
        (ws / "output").mkdir()
        for source, target in ((gt, ws / "input" / "gt.csv"), (pred, ws / "output" / "pred.csv")):
            try:
                os.link(source, target)
            except OSError:
                target.write_bytes(source.read_bytes())
        spaces.append(ws)
    return spaces


@dataclass
class Calls:
    """Count and total seconds per operation name."""

    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, name: str, seconds: float) -> None:
        self.count[name] += 1
        self.seconds[name] += seconds

    def reset(self) -> None:
        self.count.clear()
        self.seconds.clear()

    def rows(self, jobs: int) -> list[str]:
        out = []
        for name in sorted(self.count, key=lambda n: -self.seconds[n]):
            n, s = self.count[name], self.seconds[name]
            out.append(
                f"    {name:<36} {n / jobs:>6.2f}/job {1000 * s / n:>8.2f} ms mean "
                f"{1000 * s / jobs:>8.2f} ms/job"
            )
        return out


OPERATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("operation", default=None)
"""The ``JobStore`` method the services are in (set by ``TimedStore``): the driver's commands
are counted under it, and commands outside any (the bench's own polling) are not counted."""
PERIODIC = frozenset(
    {"find_pending_outbox", "find_overdue", "find_without_deadline", "find_expired_leases"}
)
"""Store calls of the scheduler's periodic sweeps: they cost per second, not per job."""


class TimedStore:
    """Wraps a ``JobStore``: every coroutine method call is counted and timed in ``calls``."""

    def __init__(self, inner: JobStore, calls: Calls) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not asyncio.iscoroutinefunction(target):
            return target

        @functools.wraps(target)
        async def timed(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            token = OPERATION.set(name)
            try:
                return await target(*a, **kw)
            finally:
                OPERATION.reset(token)
                self._calls.add(name, time.perf_counter() - started)

        return timed


class MongoCommands(monitoring.CommandListener):
    """Driver-level commands (``insert``, ``find``, ``update``, ``delete``...) and their times."""

    def __init__(self) -> None:
        self.calls = Calls()
        self.enabled = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._add(event.command_name, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._add(f"{event.command_name} (failed)", event.duration_micros)

    def _add(self, command: str, micros: int) -> None:
        operation = OPERATION.get()
        if self.enabled and operation is not None:
            self.calls.add(f"{operation}: {command}", micros / 1e6)

    def per_job(self, jobs: int) -> tuple[float, float]:
        """Commands per job on the jobs' own path, and of the periodic sweeps (per job at this
        run's rate)."""
        own = sum(n for key, n in self.calls.count.items() if key.split(":")[0] not in PERIODIC)
        periodic = sum(self.calls.count.values()) - own
        return own / jobs, periodic / jobs


MONGO = MongoCommands()
monitoring.register(MONGO)  # before any client is made: clients pick listeners up at creation


# -- publishing and tapping -----------------------------------------------------------------


class Driver:
    """Publishes events as a platform would and hands ScoreCompleted to the waiting job."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[ScoreCompleted]] = {}

    def expect(self, job_id: str) -> asyncio.Future[ScoreCompleted]:
        future = asyncio.get_running_loop().create_future()
        self.waiting[job_id] = future
        return future

    def arrived(self, event: ScoreCompleted) -> None:
        future = self.waiting.pop(event.job_id, None)
        if future is not None and not future.done():
            future.set_result(event)

    async def publish(self, event: BaseEvent) -> None:
        raise NotImplementedError

    async def floor(self, samples: int) -> list[float]:
        raise NotImplementedError


class MemoryDriver(Driver):
    def __init__(self, bus: MemoryBus, prefix: str) -> None:
        super().__init__()
        self._bus = bus
        self._prefix = prefix
        self._echo: asyncio.Future[None] | None = None

    async def subscribe(self) -> None:
        async def on_score(event: Event) -> None:
            if isinstance(event, ScoreCompleted):
                self.arrived(event)

        async def on_echo(event: Event) -> None:
            if self._echo is not None and not self._echo.done():
                self._echo.set_result(None)

        await self._bus.subscribe(
            Subscription(f"{self._prefix}.tap", ["score.completed"], on_score)
        )
        await self._bus.subscribe(Subscription(f"{self._prefix}.floor", ["job.failed"], on_echo))

    async def publish(self, event: BaseEvent) -> None:
        await self._bus.publish(event)

    async def floor(self, samples: int) -> list[float]:
        # job.failed: the only event none of the running services consumes (the gateway does)
        event = JobFailed(job_id="floor", error=FLOOR_ERROR)
        times = []
        for _ in range(samples):
            self._echo = asyncio.get_running_loop().create_future()
            started = time.perf_counter()
            await self._bus.publish(event)
            await self._echo
            times.append(time.perf_counter() - started)
        return times


class RabbitDriver(Driver):
    """A plain aio-pika client, as a platform backend would be (docs/EVENTS.md)."""

    def __init__(self, url: str, exchange: str, prefix: str) -> None:
        super().__init__()
        self._url, self._exchange_name, self._prefix = url, exchange, prefix
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._echo: asyncio.Future[None] | None = None

    async def open(self) -> None:
        self._connection = await aio_pika.connect_robust(self._url)
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        tap_channel = await self._connection.channel()
        await tap_channel.set_qos(prefetch_count=256)
        tap = await tap_channel.declare_queue(exclusive=True)
        await tap.bind(self._exchange_name, routing_key="score.completed")
        await tap.consume(self._on_tap)
        # the floor: a durable quorum queue, acked after delivery, like the services' queues
        floor_channel = await self._connection.channel()
        await floor_channel.set_qos(prefetch_count=8)
        floor = await floor_channel.declare_queue(
            f"{self._prefix}.floor", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await floor.bind(self._exchange_name, routing_key="bench.floor")
        await floor.consume(self._on_floor)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_tap(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            event = ScoreCompleted.model_validate_json(message.body)
        self.arrived(event)

    async def _on_floor(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if self._echo is not None and not self._echo.done():
            self._echo.set_result(None)
        await message.ack()

    async def _send(self, body: bytes, routing_key: str, event_id: str, job_id: str) -> None:
        assert self._exchange is not None
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event_id,
            correlation_id=job_id,
            type=routing_key,
        )
        await self._exchange.publish(message, routing_key=routing_key, mandatory=True)

    async def publish(self, event: BaseEvent) -> None:
        await self._send(encode_event(event), event.routing_key, str(event.event_id), event.job_id)

    async def floor(self, samples: int) -> list[float]:
        body = encode_event(RunCompleted(job_id="floor", outcome=_outcome("floor")))
        times = []
        for _ in range(samples):
            self._echo = asyncio.get_running_loop().create_future()
            started = time.perf_counter()
            await self._send(body, "bench.floor", str(uuid.uuid4()), "floor")
            await self._echo
            times.append(time.perf_counter() - started)
        return times


def _outcome(job_id: str) -> RunOutcome:
    return RunOutcome(job_id=job_id, backend="platform", status="succeeded", exit_code=0)


# -- one configuration ----------------------------------------------------------------------


@dataclass
class Row:
    bus: str
    store: str
    jobs: int
    concurrency: int
    wall_s: float
    latencies: list[float]
    floor_rtt: list[float]
    intake_s: float
    succeeded: int
    store_calls: Calls
    mongo_calls: Calls
    mongo_per_job: tuple[float, float]
    scorer_s: list[float]
    in_process_s: float
    store_alone: dict[str, float]
    loop_lag: list[float]

    @property
    def floor_per_job(self) -> float:
        return HOPS * statistics.median(self.floor_rtt)


async def store_alone(store: JobStore, samples: int) -> dict[str, float]:
    """Median seconds of the scheduler's store calls one at a time, before the load: what the
    same server takes for them when nothing else runs (the jobs are dropped with the database)."""
    times: dict[str, list[float]] = defaultdict(list)
    run = uuid.uuid4().hex[:6]
    for i in range(samples):
        spec = JobSpec(job_id=f"probe-{run}-{i}", scorer=SCORER)
        job_id = spec.job_id
        await store.create(new_job(spec, workspace="/nonexistent", submitter="bench"))
        started = time.perf_counter()
        await store.get(job_id)
        times["get"].append(time.perf_counter() - started)
        entry = outbox_entry(JobFailed(job_id=job_id, error=FLOOR_ERROR))
        started = time.perf_counter()
        done = await store.transition(
            job_id,
            JobStatus.SUBMITTED,
            JobStatus.QUEUED,
            event_id=str(uuid.uuid4()),
            outbox=[entry],
        )
        times["transition"].append(time.perf_counter() - started)
        started = time.perf_counter()
        await store.pop_outbox(job_id, done.job.outbox)
        times["pop_outbox"].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


async def watch_loop(lags: list[float], stop: asyncio.Event, period: float = 0.01) -> None:
    """How late a 10 ms sleep wakes up: a busy event loop delays every service in it."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(period)
        lags.append(loop.time() - started - period)


async def wait_all(
    jobs: list[str], store: JobStore, want: set[JobStatus], within_s: float
) -> dict[str, JobStatus]:
    """Poll until every job is in one of ``want`` (or the time is up); their last statuses."""
    deadline = time.monotonic() + within_s
    pending = set(jobs)
    seen: dict[str, JobStatus] = {}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = await store.get(job_id)
            if job is not None:
                seen[job_id] = job.status
                if job.status in want:
                    pending.discard(job_id)
        if pending:
            await asyncio.sleep(0.1)
    return seen


async def bounded(
    concurrency: int, items: list[Any], work: Callable[[Any], Awaitable[None]]
) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            await work(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


@contextlib.asynccontextmanager
async def running_chain(
    settings: Settings, calls: Calls, metrics: Metrics | None = None, lock: bool | None = None
) -> AsyncIterator[tuple[EventBus, JobStore, JobStore]]:
    """The services of ``autoscorer serve`` minus the gateway; yields (bus, timed store, raw
    store). Removes the run's RabbitMQ topology and database afterwards. With ``metrics`` the
    services record Prometheus metrics as ``serve`` does (``--metrics``: their cost). ``lock``
    forces the Mongo store's per-job lock on or off (``None``: as the server needs)."""
    async with AsyncExitStack() as stack:
        stack.push_async_callback(cleanup, settings)
        raw_store = make_store(settings.store, metrics)
        if lock is not None and settings.store.kind == "mongo":
            raw_store = instrument_store(
                MongoJobStore.from_url(
                    settings.store.url.get_secret_value(),
                    settings.store.database,
                    serialize_writes=lock,
                ),
                metrics,
            )
        await raw_store.init()
        stack.push_async_callback(raw_store.close)
        store: Any = TimedStore(raw_store, calls)
        bus = make_bus(settings.bus, metrics)
        registry = await asyncio.to_thread(registry_from_settings, settings.scorer)
        executor = create_executor(backend_config(settings, settings.executor_service.backend))
        stack.push_async_callback(executor.close)
        scheduler = create_scheduler(settings, bus, store, metrics)
        runner = create_executor_service(settings, bus, executor, metrics=metrics)
        scorer = create_scorer_service(settings, bus, registry, metrics=metrics)
        stack.push_async_callback(bus.close)
        for service in (scheduler, runner, scorer):
            await service.start()
            stack.push_async_callback(service.close)
        yield bus, store, raw_store
        # the bus has to start after the caller's subscriptions on the memory bus: see run_one


async def cleanup(settings: Settings) -> None:
    if settings.bus.kind == "rabbitmq":
        await delete_rabbit_topology(settings)
    if settings.store.kind == "mongo":
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.store.url.get_secret_value()
        )
        try:
            await client.drop_database(settings.store.database)
        finally:
            await client.close()


async def run_one(bus_kind: str, store_kind: str, args: argparse.Namespace) -> Row:
    with tempfile.TemporaryDirectory(prefix="bench-chain-") as tmp_name:
        tmp = Path(tmp_name)
        settings = make_settings(tmp, bus_kind, store_kind, args)
        prefix = settings.bus.exchange.removeprefix("autoscorer.")
        spaces = await asyncio.to_thread(make_workspaces, tmp / "data", args.jobs)
        registry = await asyncio.to_thread(registry_from_settings, settings.scorer)
        in_process = []
        for ws in spaces[:20]:
            started = time.perf_counter()
            score_workspace(
                registry, Workspace.at(ws), scorer=SCORER, write=False, params={"plots": args.plots}
            )
            in_process.append(time.perf_counter() - started)
        store_calls = Calls()
        metrics = Metrics() if args.metrics else None
        lock = None if args.lock == "auto" else args.lock == "on"
        async with running_chain(settings, store_calls, metrics, lock) as (bus, _store, raw_store):
            driver: Driver
            if isinstance(bus, MemoryBus):
                driver = MemoryDriver(bus, prefix)
                await driver.subscribe()
                await bus.start()
            else:
                await bus.start()
                driver = RabbitDriver(
                    settings.bus.url.get_secret_value(), settings.bus.exchange, prefix
                )
                await driver.open()
            try:
                return await measure(
                    args,
                    bus_kind,
                    store_kind,
                    spaces,
                    driver,
                    raw_store,
                    store_calls,
                    statistics.median(in_process),
                )
            finally:
                if isinstance(driver, RabbitDriver):
                    await driver.close()


async def measure(
    args: argparse.Namespace,
    bus_kind: str,
    store_kind: str,
    spaces: list[Path],
    driver: Driver,
    raw_store: JobStore,
    store_calls: Calls,
    in_process_s: float,
) -> Row:
    run = uuid.uuid4().hex[:6]
    jobs = {f"chain-{run}-{i:05d}": ws for i, ws in enumerate(spaces)}

    # 1. submit everything and wait until each job is queued (score-only: no RunRequested)
    started = time.perf_counter()

    async def submit(job_id: str) -> None:
        spec = JobSpec(
            job_id=job_id,
            task_type="classification",
            scorer=SCORER,
            time_limit=60,
            params={"plots": args.plots},
        )
        await driver.publish(
            JobSubmitted(
                job_id=job_id,
                spec=spec,
                workspace=str(jobs[job_id]),
                submitter="bench",
                idempotency_key=f"bench:{job_id}",
            )
        )

    await bounded(args.concurrency, list(jobs), submit)
    statuses = await wait_all(list(jobs), raw_store, {JobStatus.QUEUED}, args.timeout)
    intake_s = time.perf_counter() - started
    stuck = {j: s for j, s in statuses.items() if s is not JobStatus.QUEUED}
    missing = len(jobs) - len(statuses)
    if stuck or missing:
        raise SystemExit(
            f"{len(stuck)} jobs not queued ({missing} never stored): "
            f"{dict(list(stuck.items())[:5])}"
        )

    # 2. the floors, before the load: the same broker, and the same store alone
    floor_rtt = await driver.floor(args.floor_samples)
    alone = await store_alone(raw_store, 20)

    # 3. the timed part: RunCompleted -> ScoreCompleted on the tap
    store_calls.reset()
    MONGO.calls = Calls()
    MONGO.enabled = True
    latencies: list[float] = []
    scorer_s: list[float] = []

    async def complete(job_id: str) -> None:
        done = driver.expect(job_id)
        t0 = time.perf_counter()
        await driver.publish(RunCompleted(job_id=job_id, outcome=_outcome(job_id)))
        event = await asyncio.wait_for(done, args.timeout)
        latencies.append(time.perf_counter() - t0)
        if event.result.error is not None:
            raise SystemExit(f"{job_id} scored with an error: {event.result.error}")
        scorer_s.append(event.result.timing.get("score_s", float("nan")))

    lags: list[float] = []
    stop = asyncio.Event()
    watching = asyncio.create_task(watch_loop(lags, stop))
    started = time.perf_counter()
    await bounded(args.concurrency, list(jobs), complete)
    wall_s = time.perf_counter() - started
    stop.set()
    await watching
    # the scheduler's scoring -> succeeded comes after the tap's copy; count its store work too
    final = await wait_all(
        list(jobs), raw_store, {JobStatus.SUCCEEDED, JobStatus.FAILED}, args.timeout
    )
    MONGO.enabled = False
    succeeded = sum(1 for s in final.values() if s is JobStatus.SUCCEEDED)
    await check_history(raw_store, list(jobs)[:10])
    return Row(
        bus_kind,
        store_kind,
        len(jobs),
        args.concurrency,
        wall_s,
        latencies,
        floor_rtt,
        intake_s,
        succeeded,
        store_calls,
        MONGO.calls,
        MONGO.per_job(len(jobs)),
        scorer_s,
        in_process_s,
        alone,
        lags,
    )


async def check_history(store: JobStore, jobs: list[str]) -> None:
    """A score-only job goes as docs/SERVICES.md says: queued without a RunRequested, then
    queued -> running -> scoring on the platform's RunCompleted, one attempt."""
    want = ["submitted", "queued", "running", "scoring", "succeeded"]
    for job_id in jobs:
        job = await store.get(job_id)
        assert job is not None
        path = [change.status.value for change in job.history]
        if path != want or job.attempts.count != 1 or job.outbox:
            raise SystemExit(
                f"{job_id}: history {path}, attempts {job.attempts.count}, "
                f"outbox {len(job.outbox)}; expected {want}, 1, 0"
            )


# -- report ---------------------------------------------------------------------------------


def report(rows: list[Row]) -> None:
    print(
        "\nlatency = publish RunCompleted -> ScoreCompleted on the tap; floor = "
        f"{HOPS} hops x median raw publish->consume round trip (same broker, same run)\n"
    )
    print(
        f"{'bus/store':<17} {'jobs':>5} {'conc':>4} {'ok':>5} {'jobs/s':>7} {'p50 ms':>7} "
        f"{'p95 ms':>7} {'rtt ms':>7} {'floor ms':>8} {'p50/floor':>9} {'intake/s':>8}"
    )
    for r in rows:
        p50, p95 = 1000 * pct(r.latencies, 0.5), 1000 * pct(r.latencies, 0.95)
        floor = 1000 * r.floor_per_job
        print(
            f"{r.bus + '/' + r.store:<17} {r.jobs:>5} {r.concurrency:>4} {r.succeeded:>5} "
            f"{r.jobs / r.wall_s:>7.1f} {p50:>7.1f} {p95:>7.1f} "
            f"{1000 * statistics.median(r.floor_rtt):>7.2f} {floor:>8.2f} {p50 / floor:>9.1f} "
            f"{r.jobs / r.intake_s:>8.1f}"
        )
    for r in rows:
        print(
            f"\nprofile {r.bus}/{r.store} (per job, timed part incl. the final scoring -> "
            "succeeded):"
        )
        print(
            f"  scoring: scorer's own total {1000 * statistics.median(r.scorer_s):.1f} ms "
            f"(median), in this process {1000 * r.in_process_s:.1f} ms"
        )
        lag = r.loop_lag or [0.0]
        print(
            f"  event loop (all services share it): a 10 ms sleep wakes "
            f"{1000 * pct(lag, 0.5):.1f} ms late at p50, {1000 * pct(lag, 0.95):.1f} ms at p95"
        )
        alone = r.store_alone
        serial = alone["get"] + 2 * alone["transition"]  # the scheduler's path; pops ride
        print(
            f"  store alone, one call at a time before the load: transition "
            f"{1000 * alone['transition']:.1f} ms, pop_outbox {1000 * alone['pop_outbox']:.1f}"
            f" ms, get {1000 * alone['get']:.1f} ms -> 1 get + 2 transitions = "
            f"{1000 * serial:.1f} ms/job (bus floor + that: "
            f"{1000 * (serial + r.floor_per_job):.1f} ms)"
        )
        print("  job store calls (scheduler):")
        print("\n".join(r.store_calls.rows(r.jobs)))
        if r.mongo_calls.count:
            own, periodic = r.mongo_per_job
            print(
                f"  store commands per job (pymongo command monitoring): {own:.2f} on the "
                f"job's path, {periodic:.2f} of periodic sweeps; by store call: command"
            )
            print("\n".join(r.mongo_calls.rows(r.jobs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4, help="jobs in flight at once")
    parser.add_argument(
        "--bus",
        choices=("rabbitmq", "memory"),
        help="one configuration only (default: rabbitmq/mongo, rabbitmq/sqlite, memory/sqlite)",
    )
    parser.add_argument("--store", choices=("mongo", "sqlite"))
    parser.add_argument("--pool-size", type=int, default=2, help="scorer worker processes")
    parser.add_argument("--floor-samples", type=int, default=200)
    parser.add_argument(
        "--lock",
        choices=("auto", "on", "off"),
        default="auto",
        help="the Mongo store's per-job lock (auto: on FerretDB); off counts the "
        "commands real MongoDB gets (FerretDB is then not atomic: counts only)",
    )
    parser.add_argument(
        "--plots",
        action="store_true",
        help="the scorer renders its PNG plots (~150 ms CPU a job: scoring work, "
        "off by default so the chain measures the platform)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="the services record Prometheus metrics, as serve does",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per wait")
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
    args = parser.parse_args()
    if args.bus or args.store:
        bus = args.bus or ("rabbitmq" if args.store == "mongo" else "memory")
        store = args.store or ("mongo" if bus == "rabbitmq" else "sqlite")
        configs = [(bus, store)]
    else:
        configs = [("rabbitmq", "mongo"), ("rabbitmq", "sqlite"), ("memory", "sqlite")]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    rows = []
    for bus, store in configs:
        started = time.perf_counter()
        rows.append(asyncio.run(run_one(bus, store, args)))
        print(f"  {bus}/{store}: {time.perf_counter() - started:.1f} s")
    report(rows)


if __name__ == "__main__":
    main()
