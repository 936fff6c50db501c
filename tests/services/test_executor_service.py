"""The executor service on the in-memory bus with the local backend (and one named fake)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sys
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from services.executor.local import LocalConfig, LocalExecutor
from services.executor.main import create_executor_service, service_config
from services.executor.service import ExecutorService
from services.scorer.registry import ScorerRegistry
from shared.bus import RetryPolicy, Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import (
    BaseEvent,
    Event,
    JobCancelled,
    RunCompleted,
    RunHeartbeat,
    RunRequested,
    RunStarted,
    derived_event_id,
)
from shared.jobs import with_expected_outputs
from shared.models import JobSpec, RunOutcome
from shared.workspace import Workspace

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "classification"
PY = sys.executable


@dataclasses.dataclass
class Rig:
    bus: MemoryBus
    service: ExecutorService
    seen: list[BaseEvent]

    def of(self, kind: type[BaseEvent]) -> list[BaseEvent]:
        return [e for e in self.seen if isinstance(e, kind)]

    async def until(self, kind: type[BaseEvent], count: int = 1, timeout: float = 30.0) -> list:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                await asyncio.sleep(0.02)
        return self.of(kind)


def _settings(**section: object) -> Settings:
    return Settings(executor_service={"heartbeat_s": 0.1, "grace_s": 5.0, **section})


async def _rig(service: ExecutorService, bus: MemoryBus) -> Rig:
    seen: list[BaseEvent] = []

    async def observe(event: Event) -> None:
        seen.append(event)

    await bus.subscribe(
        Subscription("observer", ["run.started", "run.heartbeat", "run.completed"], observe)
    )
    await service.start()
    await bus.start()
    return Rig(bus, service, seen)


@asynccontextmanager
async def replica(name: str) -> AsyncIterator[Rig]:
    """One life of a local executor replica with its own bus: nothing carries over but disk."""
    bus = MemoryBus(drain_timeout=2.0)
    executor = LocalExecutor(LocalConfig())
    service = create_executor_service(_settings(), bus, executor, instance=name)
    rig = await _rig(service, bus)
    try:
        yield rig
    finally:
        await service.close()
        await bus.close()
        await executor.close()


@pytest.fixture
async def rig(no_leaked_tasks: None) -> AsyncIterator[Rig]:
    async with replica("exec-a") as rig:
        yield rig


def _workspace(tmp_path: Path, cmd: list[str] | None = None) -> tuple[JobSpec, Path]:
    """A copy of the classification example (no predictions yet) running ``cmd``."""
    root = tmp_path / "ws"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("pred.csv", "result.json"))
    spec = Workspace.at(root).load_spec()
    assert spec.container is not None
    container = spec.container.model_copy(update={"cmd": cmd or [PY, "submission/predict.py"]})
    spec = spec.model_copy(update={"container": container})
    (root / "meta.json").write_text(spec.model_dump_json())
    return spec, root


def _request(spec: JobSpec, root: Path, attempt: int = 1) -> RunRequested:
    return RunRequested(
        job_id=spec.job_id, backend="local", attempt=attempt, spec=spec, workspace=str(root)
    )


async def test_a_run_is_started_completed_and_leaves_the_predictions(rig, tmp_path):
    spec, root = _workspace(tmp_path)
    await rig.bus.publish(_request(spec, root, attempt=2))
    [done] = await rig.until(RunCompleted)
    assert isinstance(done, RunCompleted)
    assert done.outcome.status == "succeeded", done.outcome.error
    assert (done.attempt, done.workspace, done.job_id) == (2, str(root), spec.job_id)
    [started] = rig.of(RunStarted)
    assert isinstance(started, RunStarted)
    assert (started.instance, started.backend, started.attempt) == ("exec-a", "local", 2)
    assert started.lease_ttl_s == pytest.approx(0.3)
    assert rig.seen.index(started) < rig.seen.index(done)
    assert (root / "output" / "pred.csv").read_text().startswith("id,label\n")


async def test_outputs_the_spec_expects_are_required(rig, tmp_path):
    """The executor knows no scorer: the outputs to check travel on the spec (the gateway fills
    them from the scorer's metadata, ``shared.jobs.with_expected_outputs``)."""
    spec, root = _workspace(tmp_path, [PY, "-c", "print('no predictions today')"])
    assert spec.expected_outputs is None
    builtins = ScorerRegistry.with_builtins()
    spec = with_expected_outputs(spec, builtins.get(spec.scorer).info.expected_files)
    assert spec.expected_outputs == ["pred.csv"]
    await rig.bus.publish(_request(spec, root))
    [done] = await rig.until(RunCompleted)
    assert done.outcome.status == "failed"
    assert done.outcome.error.code is ErrorCode.OUTPUT_MISSING
    assert "pred.csv" in done.outcome.error.message


async def test_a_participant_failure_is_a_completed_run_with_its_error(rig, tmp_path):
    spec, root = _workspace(tmp_path, [PY, "-c", "raise SystemExit(3)"])
    await rig.bus.publish(_request(spec, root))
    [done] = await rig.until(RunCompleted)
    assert done.outcome.error.code is ErrorCode.CONTAINER_EXIT_NONZERO
    assert done.outcome.exit_code == 3
    assert not rig.bus.dead_letters


async def test_heartbeats_while_the_run_goes(rig, tmp_path):
    spec, root = _workspace(tmp_path, [PY, "-c", _sleep_then_predict(0.8)])
    await rig.bus.publish(_request(spec, root))
    await rig.until(RunCompleted)
    beats = rig.of(RunHeartbeat)
    assert len(beats) >= 3
    assert all(isinstance(b, RunHeartbeat) and b.instance == "exec-a" for b in beats)
    elapsed = [b.elapsed_s for b in beats]
    assert elapsed == sorted(elapsed)
    completed_at = rig.seen.index(rig.of(RunCompleted)[0])
    await asyncio.sleep(0.3)
    assert all(rig.seen.index(b) < completed_at for b in rig.of(RunHeartbeat)), "beat after end"


def _sleep_then_predict(seconds: float) -> str:
    return (
        f"import time, runpy; time.sleep({seconds}); "
        "runpy.run_path('submission/predict.py', run_name='__main__')"
    )


async def test_a_duplicate_request_runs_once_and_gets_the_same_answer(rig, tmp_path):
    spec, root = _workspace(tmp_path, [PY, "-c", _sleep_then_predict(0.3)])
    request = _request(spec, root)
    await rig.bus.publish(request)
    await rig.bus.publish(request)  # redelivered while it runs: joins the run
    await rig.until(RunCompleted)
    await asyncio.sleep(0.2)
    assert len(rig.of(RunCompleted)) == 1
    await rig.bus.publish(request)  # the scheduler's relay, after completion
    done = await rig.until(RunCompleted, 2)
    assert len(rig.of(RunStarted)) == 1
    assert {e.event_id for e in done} == {derived_event_id(request.event_id, "run.completed")}


async def test_cancel_stops_the_run(rig, tmp_path):
    spec, root = _workspace(tmp_path, [PY, "-c", "import time; time.sleep(60)"])
    await rig.bus.publish(_request(spec, root))
    await rig.until(RunStarted)
    await rig.bus.publish(JobCancelled(job_id=spec.job_id, reason="test"))
    [done] = await rig.until(RunCompleted, timeout=10)
    assert done.outcome.status == "cancelled"
    assert done.outcome.error.code is ErrorCode.CANCELLED


async def test_a_request_for_a_cancelled_job_is_not_run(rig, tmp_path):
    spec, root = _workspace(tmp_path)
    await rig.bus.publish(JobCancelled(job_id=spec.job_id))
    await asyncio.sleep(0.1)
    await rig.bus.publish(_request(spec, root))
    [done] = await rig.until(RunCompleted)
    assert done.outcome.status == "cancelled"
    assert not rig.of(RunStarted)


async def test_close_hands_back_a_run_that_outlives_the_grace(tmp_path, no_leaked_tasks):
    bus = MemoryBus(drain_timeout=2.0)
    executor = LocalExecutor(LocalConfig())
    config = dataclasses.replace(
        service_config(_settings(grace_s=0.3), "exec-a"),
        retry=RetryPolicy(max_attempts=2, delays=(0.05,)),
    )
    service = ExecutorService(config, bus, executor)
    rig = await _rig(service, bus)
    marker = tmp_path / "still-running"
    code = f"import time, pathlib; time.sleep(3); pathlib.Path({str(marker)!r}).touch()"
    spec, root = _workspace(tmp_path, [PY, "-c", code])
    try:
        await bus.publish(_request(spec, root))
        await rig.until(RunStarted)
        async with asyncio.timeout(10):
            await service.close()
        # handed back, not answered: the bus delivers it again (here to the same closed replica,
        # which hands it back again until the test's retry policy gives up)
        [dead] = await _dead_letters(bus, 1)
    finally:
        await bus.close()
        await executor.close()
    assert not rig.of(RunCompleted)
    assert dead.attempt == 2
    assert dead.error.code is ErrorCode.EXEC_ERROR
    assert dead.error.details["reason"] == "handed_back"
    await asyncio.sleep(3.5)
    assert not marker.exists(), "the handed-back run was not stopped"


async def _dead_letters(bus: MemoryBus, count: int) -> list:
    async with asyncio.timeout(10):
        while len(bus.dead_letters) < count:
            await asyncio.sleep(0.02)
    return bus.dead_letters


async def test_close_lets_a_run_finish_within_the_grace(rig, tmp_path):
    spec, root = _workspace(tmp_path, [PY, "-c", _sleep_then_predict(0.5)])
    await rig.bus.publish(_request(spec, root))
    await rig.until(RunStarted)
    await rig.service.close()
    [done] = await rig.until(RunCompleted)
    assert done.outcome.status == "succeeded"


class UnreachableBackend:
    """A backend whose engine is down: every run raises a retryable platform error."""

    name = "local"

    def __init__(self) -> None:
        self.cleaned: list[Collection[str]] = []

    async def run(self, spec: JobSpec, ws: Workspace) -> RunOutcome:
        raise AutoscorerError(
            ErrorCode.BACKEND_UNAVAILABLE, "engine unreachable", stage=Stage.EXECUTION
        )

    async def cancel(self, job_id: str) -> bool:
        return False

    async def cleanup_leftovers(self, live_job_ids: Collection[str]) -> int:
        self.cleaned.append(live_job_ids)
        return 0

    async def close(self) -> None:
        return None


async def test_a_platform_failure_is_reported_for_the_scheduler_to_retry(tmp_path, no_leaked_tasks):
    bus = MemoryBus(drain_timeout=2.0)
    backend = UnreachableBackend()
    service = create_executor_service(_settings(max_time_limit_s=120), bus, backend, instance="x")
    rig = await _rig(service, bus)
    spec, root = _workspace(tmp_path)
    too_long = spec.model_copy(update={"time_limit": 121})
    try:
        await bus.publish(_request(spec, root))
        await bus.publish(_request(too_long, root, attempt=2))
        done = await rig.until(RunCompleted, 2)
    finally:
        await service.close()
        await bus.close()
    by_attempt = {e.attempt: e.outcome for e in done}
    assert by_attempt[1].error.code is ErrorCode.BACKEND_UNAVAILABLE
    assert by_attempt[1].error.retryable is True
    assert by_attempt[2].error.code is ErrorCode.RESOURCE_LIMIT_EXCEEDED
    assert by_attempt[2].error.fault == "participant"
    assert [e.attempt for e in rig.of(RunStarted)] == [1]
    assert backend.cleaned == [()]
    assert service.config.handler_timeout == 120 + 600.0


class SlowStartBackend:
    """Takes a while to start a run, and can only cancel one it has started."""

    name = "local"

    def __init__(self) -> None:
        self.running: dict[str, asyncio.Event] = {}

    async def run(self, spec: JobSpec, ws: Workspace) -> RunOutcome:
        await asyncio.sleep(0.5)
        stop = self.running[spec.job_id] = asyncio.Event()
        try:
            async with asyncio.timeout(30):
                await stop.wait()
        finally:
            del self.running[spec.job_id]
        error = AutoscorerError(ErrorCode.CANCELLED, "cancelled", stage=Stage.EXECUTION)
        return RunOutcome(
            job_id=spec.job_id, backend=self.name, status="cancelled", error=error.to_info()
        )

    async def cancel(self, job_id: str) -> bool:
        if job_id not in self.running:
            return False
        self.running[job_id].set()
        return True

    async def cleanup_leftovers(self, live_job_ids: Collection[str]) -> int:
        return 0

    async def close(self) -> None:
        return None


async def test_a_cancel_that_arrives_while_the_run_starts_still_stops_it(tmp_path, no_leaked_tasks):
    bus = MemoryBus(drain_timeout=2.0)
    service = create_executor_service(_settings(), bus, SlowStartBackend(), instance="x")
    rig = await _rig(service, bus)
    spec, root = _workspace(tmp_path)
    try:
        await bus.publish(_request(spec, root))
        await rig.until(RunStarted)
        await bus.publish(JobCancelled(job_id=spec.job_id))
        [done] = await rig.until(RunCompleted, timeout=10)
    finally:
        await service.close()
        await bus.close()
    assert done.outcome.status == "cancelled"


async def test_a_newer_attempt_stops_an_older_one_of_the_same_job(rig, tmp_path):
    spec, root = _workspace(tmp_path, [PY, "-c", "import time; time.sleep(60)"])
    await rig.bus.publish(_request(spec, root, attempt=1))
    await rig.until(RunStarted)
    quick = spec.model_copy(
        update={
            "container": spec.container.model_copy(update={"cmd": [PY, "submission/predict.py"]})
        }
    )
    await rig.bus.publish(_request(quick, root, attempt=2))
    done = await rig.until(RunCompleted, count=2, timeout=20)
    by_attempt = {e.attempt: e.outcome for e in done}
    assert by_attempt[1].status == "cancelled"
    assert by_attempt[2].status == "succeeded", by_attempt[2].error
    assert [e.attempt for e in done] == [1, 2]


def _counting_run(marker: Path, seconds: float) -> str:
    """A participant program that notes each start in ``marker``, sleeps, then predicts."""
    return (
        f"import pathlib, time, runpy; p = pathlib.Path({str(marker)!r}); "
        "p.open('a').write('start\\n'); "
        f"time.sleep({seconds}); runpy.run_path('submission/predict.py', run_name='__main__')"
    )


async def test_a_broker_blip_does_not_restart_the_run_its_redelivery_joins_it(rig, tmp_path):
    starts = tmp_path / "starts"
    spec, root = _workspace(tmp_path, [PY, "-c", _counting_run(starts, 1.5)])
    request = _request(spec, root)
    await rig.bus.publish(request)
    await rig.until(RunStarted)
    await asyncio.sleep(0.2)

    # the delivery's channel dies: the bus cancels the handler and delivers the request again
    assert await rig.bus.blip([rig.service.config.queue]) == 1
    await rig.until(RunHeartbeat, count=len(rig.of(RunHeartbeat)) + 2)  # beats go on meanwhile
    [done] = await rig.until(RunCompleted, timeout=20)
    await asyncio.sleep(0.3)

    assert done.outcome.status == "succeeded", done.outcome.error
    assert done.event_id == derived_event_id(request.event_id, "run.completed")
    assert len(rig.of(RunCompleted)) == 1
    assert len(rig.of(RunStarted)) == 1
    assert starts.read_text() == "start\n", "the participant program was started again"
    assert not rig.bus.dead_letters


async def test_a_heartbeat_that_cannot_be_published_does_not_end_the_run(tmp_path, no_leaked_tasks):
    bus = MemoryBus(drain_timeout=2.0)
    executor = LocalExecutor(LocalConfig())
    service = create_executor_service(_settings(), bus, executor, instance="x")
    rig = await _rig(service, bus)
    publish = bus.publish
    failing = {"left": 5}

    async def flaky(event: BaseEvent) -> None:  # the broker is away for the first beats
        if isinstance(event, RunHeartbeat) and failing["left"] > 0:
            failing["left"] -= 1
            raise AutoscorerError(ErrorCode.BUS_ERROR, "broker away", stage=Stage.PLATFORM)
        await publish(event)

    bus.publish = flaky  # type: ignore[method-assign]
    spec, root = _workspace(tmp_path, [PY, "-c", _sleep_then_predict(1.2)])
    try:
        await bus.publish(_request(spec, root))
        [done] = await rig.until(RunCompleted, timeout=20)
    finally:
        await service.close()
        await bus.close()
        await executor.close()
    assert done.outcome.status == "succeeded", done.outcome.error
    assert failing["left"] == 0
    assert rig.of(RunHeartbeat), "heartbeats stopped after the failed ones"
    assert service.supervisor.unhealthy() == []


async def test_runs_a_blip_left_without_a_delivery_still_count_against_concurrency(
    tmp_path, no_leaked_tasks
):
    bus = MemoryBus(drain_timeout=2.0)
    executor = LocalExecutor(LocalConfig())
    service = create_executor_service(_settings(concurrency=1), bus, executor, instance="x")
    rig = await _rig(service, bus)
    starts = tmp_path / "starts"
    long_spec, long_root = _workspace(tmp_path, [PY, "-c", _counting_run(starts, 1.5)])
    other = long_spec.model_copy(update={"job_id": "job-other"})
    other_root = tmp_path / "other"
    shutil.copytree(long_root, other_root)
    try:
        await bus.publish(_request(long_spec, long_root))
        await rig.until(RunStarted)
        await bus.publish(_request(other, other_root))  # waits for the bus's one slot
        # the long run loses its delivery; the other request is delivered before its redelivery
        assert await bus.blip([service.config.queue]) == 1
        done = await rig.until(RunCompleted, count=2, timeout=30)
    finally:
        await service.close()
        await bus.close()
        await executor.close()
    # the long run answered when it ended, its redelivery later got the same event again
    assert [e.job_id for e in done[:2]] == [long_spec.job_id, "job-other"]
    assert len({e.event_id for e in done if e.job_id == long_spec.job_id}) == 1
    started = {e.job_id: rig.seen.index(e) for e in rig.of(RunStarted)}
    assert started["job-other"] > rig.seen.index(done[0]), "two runs at once on one slot"
    assert starts.read_text() == "start\nstart\n"  # one each: the long run was not restarted
    assert not bus.dead_letters


async def test_a_run_that_ends_while_the_broker_is_away_is_answered_on_redelivery(
    tmp_path, no_leaked_tasks
):
    bus = MemoryBus(drain_timeout=2.0)
    executor = LocalExecutor(LocalConfig())
    service = create_executor_service(_settings(), bus, executor, instance="x")
    rig = await _rig(service, bus)
    publish = bus.publish
    refused: list[BaseEvent] = []

    async def away(event: BaseEvent) -> None:  # the first answer finds no broker
        if isinstance(event, RunCompleted) and not refused:
            refused.append(event)
            raise AutoscorerError(ErrorCode.BUS_ERROR, "broker away", stage=Stage.PLATFORM)
        await publish(event)

    bus.publish = away  # type: ignore[method-assign]
    starts = tmp_path / "starts"
    spec, root = _workspace(tmp_path, [PY, "-c", _counting_run(starts, 0.5)])
    request = _request(spec, root)
    try:
        await bus.publish(request)
        await rig.until(RunStarted)
        # the delivery is lost and the broker gives it back only after the run has ended
        assert await bus.blip([service.config.queue], redeliver_after=2.0) == 1
        [done] = await rig.until(RunCompleted, timeout=20)
    finally:
        await service.close()
        await bus.close()
        await executor.close()
    assert [e.event_id for e in refused] == [done.event_id]  # the same answer, published again
    assert done.outcome.status == "succeeded", done.outcome.error
    assert starts.read_text() == "start\n"
    assert len(rig.of(RunStarted)) == 1
    assert not bus.dead_letters
