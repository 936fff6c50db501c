"""A broker blip keeps long runs and scorings (issue 7, class 4; docs/SERVICES.md).

Two jobs in flight on the real stack parts, in this process, on a test-private exchange: the
scheduler (SQLite store), an executor service on the Docker backend and a scorer service, each on
its own RabbitBus.

* job ``run``: its participant container (busybox) sleeps through the blip;
* job ``score``: its run is done, its slow scorer scores through the blip.

The blip is either a RabbitMQ restart (``rabbitmqctl stop_app`` / ``start_app``: the shared
broker, so that test runs last and alone, marker ``broker_restart``) or the broker closing the
executor's and the scorer's connections (``rabbitmqctl close_connection``: touches nothing else,
so it runs with the others). Afterwards: the container is the one started before the blip (one
container id for the job, still running when the broker was back), the attempt is still 1,
heartbeats went on after the blip, every event reached a durable tap queue once (deduped by
``event_id``: exactly one ``RunCompleted`` and one ``ScoreCompleted`` per job), each job was
scored exactly once and succeeded.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiodocker
import pytest

from services.executor.docker.backend import DockerExecutor
from services.executor.docker.config import DockerConfig
from services.executor.docker.sandbox import LABEL_INSTANCE, LABEL_JOB
from services.executor.main import create_executor_service
from services.scheduler.main import create_scheduler
from services.scorer.main import create_scorer_service
from services.scorer.plugins import registry_from_settings
from shared.bus import RetryPolicy
from shared.bus_rabbitmq import RabbitBus, RabbitBusConfig, dead_letter_queue, retry_queue
from shared.config import Settings
from shared.events import (
    BaseEvent,
    JobSubmitted,
    RunCompleted,
    RunHeartbeat,
    RunRequested,
    RunStarted,
    ScoreCompleted,
    ScoreRequested,
    parse_event,
)
from shared.jobs import TERMINAL_STATES, Job, JobStatus
from shared.models import JobSpec
from shared.store_sqlite import SqliteJobStore

pytestmark = [pytest.mark.rabbitmq, pytest.mark.docker, pytest.mark.slow]

RABBIT_URL = os.environ.get("AUTOSCORER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
BUSYBOX = "autoscorer-test/busybox:1"
RUN_S = 25  # the long participant run, and the long scoring: both must outlast the restart
HEARTBEAT_S = 5.0  # lease 15 s: a restart must fit in it, or the scheduler takes the run back

SCORERS = f"""
import time

from shared.models import Result
from shared.scoring import register


def _note(ws, what):
    ws.output_dir.mkdir(exist_ok=True)
    with open(ws.output_dir / "scorings", "a") as f:
        f.write(what + "\\n")


@register("blip_quick", version="1.0.0", task_type="demo", description="scores at once",
          expected_files=(), primary_metric="value")
def blip_quick(ws, params):
    _note(ws, "start")
    _note(ws, "end")
    return Result(summary={{"value": 1.0}})


@register("blip_slow", version="1.0.0", task_type="demo", description="scores slowly",
          expected_files=(), primary_metric="value")
def blip_slow(ws, params):
    _note(ws, "start")
    time.sleep({RUN_S})
    _note(ws, "end")
    return Result(summary={{"value": 2.0}})
"""

ALL_DELAYS = sorted({*RetryPolicy().delays, 1.0, 5.0, 15.0, 30.0})


@dataclass
class Stack:
    """The three services on one private exchange, a tap on it, and what a test looks at."""

    tmp: Path
    prefix: str = field(default_factory=lambda: f"test-blip-{uuid.uuid4().hex[:10]}")
    instance: str = field(default_factory=lambda: f"blip-{uuid.uuid4().hex[:10]}")
    buses: list[RabbitBus] = field(default_factory=list)
    queues: set[str] = field(default_factory=set)
    containers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @property
    def tap(self) -> str:
        return f"{self.prefix}.tap"

    def bus(self, role: str) -> RabbitBus:
        bus = RabbitBus(
            RabbitBusConfig(
                url=RABBIT_URL,
                exchange=f"{self.prefix}.events",
                dead_letter_exchange=f"{self.prefix}.dlx",
                publish_timeout=120.0,
                reconnect_interval=0.5,
                drain_timeout=5.0,
                connection_name=f"{self.prefix}-{role}",
            )
        )
        self.buses.append(bus)
        return bus

    def settings(self) -> Settings:
        plugin = self.tmp / "plugins" / "blip_scorers.py"
        plugin.parent.mkdir(parents=True, exist_ok=True)
        plugin.write_text(SCORERS)
        return Settings(
            scheduler={
                "queue": f"{self.prefix}.scheduler.jobs",
                "enabled_backends": ["docker"],
                "lease_check_interval_s": 1.0,
                "relay_interval_s": 1.0,
            },
            executor_service={
                "backend": "docker",
                "heartbeat_s": HEARTBEAT_S,
                "concurrency": 2,
                "queue_prefix": f"{self.prefix}.",
                "cleanup_on_start": False,
            },
            scorer={
                "pool_size": 2,
                "time_limit": RUN_S + 60,
                "queue_prefix": f"{self.prefix}.",
                "plugin_paths": [str(plugin)],
                "plugin_dir": str(self.tmp / "plugin-dir"),
            },
        )

    async def declare_tap(self) -> None:
        """A durable queue bound to every event: it keeps what it got across the restart."""
        connection = await aio_pika.connect(RABBIT_URL)
        async with connection:
            channel = await connection.channel()
            await channel.declare_exchange(
                f"{self.prefix}.events", aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(self.tap, durable=True)
            await queue.bind(f"{self.prefix}.events", routing_key="#")
        self.queues.add(self.tap)

    async def tapped(self) -> list[BaseEvent]:
        """Everything the tap holds (each message once, as delivered: duplicates included)."""
        events: list[BaseEvent] = []
        connection = await aio_pika.connect(RABBIT_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(self.tap)
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                events.append(parse_event(message.body))
        return events

    async def watch_containers(self, docker: aiodocker.Docker) -> None:
        """Note every container id this test's executor instance has, per job, until cancelled."""
        filters = {"label": [f"{LABEL_INSTANCE}={self.instance}"]}
        while True:
            for container in await docker.containers.list(all=True, filters=filters):
                labels = container._container.get("Labels") or {}
                self.containers[labels.get(LABEL_JOB, "?")].add(container.id)
            await asyncio.sleep(0.2)

    async def cleanup(self) -> None:
        for bus in self.buses:
            await bus.close()
        connection = await aio_pika.connect(RABBIT_URL)
        async with connection:
            channel = await connection.channel()
            for queue in self.queues:
                names = [queue, dead_letter_queue(queue)]
                names += [retry_queue(queue, delay) for delay in ALL_DELAYS]
                for name in names:
                    await channel.queue_delete(name)
            await channel.exchange_delete(f"{self.prefix}.events")
            await channel.exchange_delete(f"{self.prefix}.dlx")


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker()
    try:
        await client.version()
    except aiodocker.DockerError as exc:
        await client.close()
        pytest.fail(f"no Docker engine ({exc.message}); run scripts/provision/docker.sh as root")
    yield client
    await client.close()


def _job(tmp: Path, name: str, cmd: list[str], scorer: str) -> JobSubmitted:
    root = tmp / f"ws-{name}"
    (root / "input").mkdir(parents=True)
    (root / "input" / "data.csv").write_text("id,x\n1,0.5\n")
    spec = JobSpec(
        job_id=f"job-{name}-{uuid.uuid4().hex[:8]}",
        scorer=scorer,
        container={"image": BUSYBOX, "cmd": cmd},
        time_limit=RUN_S + 60,
        resources={"cpu": 1, "memory": "64Mi"},
        expected_outputs=[],
    )
    (root / "meta.json").write_text(spec.model_dump_json())
    return JobSubmitted(job_id=spec.job_id, spec=spec, workspace=str(root), submitter="blip")


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


Blip = Callable[["Stack"], Awaitable[None]]


async def restart_the_broker(stack: Stack) -> None:
    """``rabbitmqctl stop_app``, a pause, ``start_app``: every connection is lost."""
    await _rabbitmqctl("stop_app")
    try:
        await asyncio.sleep(2.0)  # the services notice: channels die, handlers are cancelled
    finally:
        await _rabbitmqctl("start_app")
        await _rabbitmqctl("await_startup")


async def drop_the_service_connections(stack: Stack) -> None:
    """The broker closes the executor's and the scorer's connections (as on a network blip or a
    node failover); nothing else on the shared broker is touched."""
    names = [f"{stack.prefix}-executor", f"{stack.prefix}-scorer"]
    listing = await _rabbitmqctl("list_connections", "pid", "client_properties", "-q")
    found = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if any(f'{{"connection_name","{name}"}}' in line for name in names)
    ]
    assert len(found) == 2, f"the services' connections are not listed: {found}"
    for pid in found:
        await _rabbitmqctl("close_connection", pid, "test: a connection blip")


@pytest.mark.broker_restart
async def test_a_broker_restart_keeps_the_running_container_and_the_scoring(
    tmp_path: Path, docker: aiodocker.Docker
) -> None:
    await _two_jobs_across(restart_the_broker, tmp_path, docker)


async def test_a_lost_connection_keeps_the_running_container_and_the_scoring(
    tmp_path: Path, docker: aiodocker.Docker
) -> None:
    await _two_jobs_across(drop_the_service_connections, tmp_path, docker)


async def _two_jobs_across(blip: Blip, tmp_path: Path, docker: aiodocker.Docker) -> None:
    """Start a long run and a long scoring, ``blip``, and check both went on undisturbed."""
    stack = Stack(tmp_path)
    settings = stack.settings()
    store = SqliteJobStore(tmp_path / "jobs.db")
    await store.init()
    registry = registry_from_settings(settings.scorer)
    executor = DockerExecutor(DockerConfig(pull_policy="never", instance=stack.instance))
    scheduler_bus, exec_bus, score_bus, client_bus = (
        stack.bus(name) for name in ("scheduler", "executor", "scorer", "client")
    )
    scheduler = create_scheduler(settings, scheduler_bus, store)
    runner = create_executor_service(settings, exec_bus, executor, instance=stack.instance)
    scorer = create_scorer_service(settings, score_bus, registry, instance=stack.instance)
    stack.queues |= {
        settings.scheduler.queue,
        runner.config.queue,
        runner.config.cancel_queue,
        scorer.config.requests_queue,
        scorer.config.changes_queue,
    }
    long_run = _job(tmp_path, "run", ["sh", "-c", f"sleep {RUN_S}"], "blip_quick")
    long_score = _job(tmp_path, "score", ["true"], "blip_slow")
    score_notes = Path(long_score.workspace) / "output" / "scorings"
    watcher = asyncio.create_task(stack.watch_containers(docker))
    try:
        await stack.declare_tap()
        await scheduler.start()
        await runner.start()
        await scorer.start()
        for bus in stack.buses:
            await bus.start()
        await client_bus.publish(long_run)
        await client_bus.publish(long_score)

        async def both_in_flight() -> bool:
            return bool(stack.containers[long_run.job_id]) and score_notes.is_file()

        await _until(both_in_flight, 60, "the long run's container and the slow scoring")
        [run_container] = stack.containers[long_run.job_id]

        began = time.monotonic()
        await blip(stack)
        blip_s = time.monotonic() - began
        restarted_at = datetime.now(UTC)
        # both were still going when the broker came back, or the test proved nothing
        assert await _running(docker, run_container), "the blip stopped the run's container"
        assert score_notes.read_text() == "start\n", "the scoring ended during the blip"
        await _until(lambda: _ready(stack), 60, "every bus to reconnect")

        async def both_done() -> bool:
            jobs = [await store.get(e.job_id) for e in (long_run, long_score)]
            return all(job is not None and job.status in TERMINAL_STATES for job in jobs)

        await _until(both_done, RUN_S + 90, "both jobs to end")
        run_job, score_job = await _jobs(store, long_run.job_id, long_score.job_id)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await runner.close()
        await scorer.close()
        await scheduler.close()
        await executor.close()
        tapped = await stack.tapped()
        await stack.cleanup()
        await store.close()

    answers = [e for e in tapped if isinstance(e, (RunCompleted, ScoreCompleted))]
    print(  # the numbers docs/RELIABILITY.md quotes
        f"{blip.__name__} took {blip_s:.1f} s; {len(answers)} answers delivered to the tap, "
        f"{len({e.event_id for e in answers})} distinct"
    )
    for job in (run_job, score_job):
        assert job.status is JobStatus.SUCCEEDED, (job.job_id, job.error)
        assert job.attempts.count == 1, "the run was taken back and started again"

    # the long run: one container, started once, one attempt, one answer
    assert stack.containers[long_run.job_id] == {run_container}
    by_id = _dedupe(tapped)
    mine = [e for e in by_id.values() if e.job_id == long_run.job_id]
    assert [e.attempt for e in mine if isinstance(e, RunRequested)] == [1]
    assert len([e for e in mine if isinstance(e, RunStarted)]) == 1
    [completed] = [e for e in mine if isinstance(e, RunCompleted)]
    assert completed.attempt == 1
    assert completed.outcome.status == "succeeded", completed.outcome.error
    beats = [e.occurred_at for e in mine if isinstance(e, RunHeartbeat)]
    assert any(at > restarted_at for at in beats), "the heartbeats stopped at the restart"
    assert len([e for e in mine if isinstance(e, ScoreRequested)]) == 1
    assert len([e for e in mine if isinstance(e, ScoreCompleted)]) == 1
    assert (Path(long_run.workspace) / "output" / "scorings").read_text() == "start\nend\n"

    # the long scoring: scored once, one ScoreCompleted
    theirs = [e for e in by_id.values() if e.job_id == long_score.job_id]
    [scored] = [e for e in theirs if isinstance(e, ScoreCompleted)]
    assert scored.result.summary == {"value": 2.0}
    assert len(stack.containers[long_score.job_id]) == 1
    assert score_notes.read_text() == "start\nend\n", "the scoring was done again"


async def _running(docker: aiodocker.Docker, container: str) -> bool:
    try:
        return bool((await docker.containers.container(container).show())["State"]["Running"])
    except aiodocker.DockerError:  # removed
        return False


async def _ready(stack: Stack) -> bool:
    return all(bus.ready() for bus in stack.buses)


def _dedupe(events: list[BaseEvent]) -> dict[uuid.UUID, BaseEvent]:
    """Consumers dedupe on ``event_id``; a re-published duplicate is the same event."""
    by_id: dict[uuid.UUID, BaseEvent] = {}
    for event in events:
        kept = by_id.setdefault(event.event_id, event)
        if isinstance(event, (RunCompleted, ScoreCompleted)):
            assert kept.model_dump(exclude={"occurred_at"}) == event.model_dump(
                exclude={"occurred_at"}
            ), "two different events under one event_id"
    return by_id


async def _jobs(store: SqliteJobStore, *job_ids: str) -> list[Job]:
    jobs = [await store.get(job_id) for job_id in job_ids]
    found = [job for job in jobs if job is not None]
    assert len(found) == len(job_ids)
    return found


async def _rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)}: {err.decode()}"
    return out.decode()
