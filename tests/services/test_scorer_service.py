"""The scorer service on the in-memory bus: a real workspace, time-outs, crashes, plugins."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.executor.local import LocalConfig, LocalExecutor
from services.scorer.engine import score_workspace
from services.scorer.main import create_scorer_service
from services.scorer.plugins import registry_from_settings, sha256_text
from services.scorer.pool import ScoringPool
from services.scorer.registry import ScorerRegistry
from services.scorer.service import ScorerService
from shared.bus import RetryPolicy, Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.errors import AutoscorerError, ErrorCode
from shared.events import Event, ScoreCompleted, ScoreRequested, derived_event_id
from shared.models import JobSpec
from shared.workspace import Workspace
from tests.scorer.plugin_text import plugin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "classification"
TIME_LIMIT = 3.0
"""the scoring time limit of the test that runs past it"""
ROOMY_LIMIT = 60.0
"""every other test's: a scoring that should finish is not judged against a busy machine's clock"""

SLEEPY = """
import time

from shared.models import Result
from shared.scoring import register


@register("sleepy", version="1.0.0", task_type="demo", description="never finishes",
          expected_files=(), primary_metric="value")
def sleepy(ws, params):
    (ws.output_dir / "scoring.started").touch()
    time.sleep(600)
    return Result(summary={"value": 1.0})
"""

CRASHING = """
import os

from shared.models import Result
from shared.scoring import register


@register("crashing", version="1.0.0", task_type="demo", description="raises",
          expected_files=(), primary_metric="value")
def crashing(ws, params):
    raise RuntimeError("division by zero in the organiser's code")


@register("vanishing", version="1.0.0", task_type="demo", description="kills its interpreter",
          expected_files=(), primary_metric="value")
def vanishing(ws, params):
    os._exit(3)
"""


@pytest.fixture
async def predicted(tmp_path: Path) -> tuple[JobSpec, Path]:
    """The classification example in tmp, with output/pred.csv made by running its program; its
    spec draws no plots (no test here is about them, and matplotlib is the slow part of a score)."""
    root = tmp_path / "classification"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("pred.csv", "result.json"))
    ws = Workspace.at(root)
    spec = ws.load_spec()
    assert spec.container is not None
    container = spec.container.model_copy(update={"cmd": [sys.executable, "submission/predict.py"]})
    spec = spec.model_copy(
        update={
            "container": container,
            "expected_outputs": ["pred.csv"],
            "params": {**spec.params, "plots": False},
        }
    )
    outcome = await LocalExecutor(LocalConfig()).run(spec, ws)
    assert outcome.error is None, outcome.error
    return spec, root


@dataclass
class Rig:
    bus: MemoryBus
    services: list[ScorerService]
    completed: list[ScoreCompleted]

    async def score(self, spec: JobSpec, root: Path, count: int = 1) -> list[ScoreCompleted]:
        await self.bus.publish(ScoreRequested(job_id=spec.job_id, spec=spec, workspace=str(root)))
        async with asyncio.timeout(60):
            while len(self.of(spec.job_id)) < count:
                await asyncio.sleep(0.02)
        return self.of(spec.job_id)

    def of(self, job_id: str) -> list[ScoreCompleted]:
        return [e for e in self.completed if e.job_id == job_id]


def _service(bus: MemoryBus, tmp_path: Path, name: str, **extra: object) -> ScorerService:
    settings = Settings(
        scorer={
            "pool_size": 1,
            "time_limit": ROOMY_LIMIT,
            "grace_s": 2.0,
            "plugin_dir": tmp_path / f"plugins-{name}",
            "queue_prefix": f"{name}.",
            **extra,
        }
    )
    registry = registry_from_settings(settings.scorer)
    return create_scorer_service(settings, bus, registry, instance=name)


async def _rig(tmp_path: Path, names: list[str], **extra: object) -> Rig:
    bus = MemoryBus(drain_timeout=2.0)
    completed: list[ScoreCompleted] = []

    async def observe(event: Event) -> None:
        assert isinstance(event, ScoreCompleted)
        completed.append(event)

    await bus.subscribe(Subscription("observer", ["score.completed"], observe))
    services = [_service(bus, tmp_path, name, **extra) for name in names]
    for service in services:
        await service.start()
    await bus.start()
    return Rig(bus, services, completed)


async def _close(rig: Rig) -> None:
    for service in rig.services:
        await service.close()
    await rig.bus.close()


@pytest.fixture
async def rig(tmp_path: Path, no_leaked_tasks: None) -> AsyncIterator[Rig]:
    rig = await _rig(tmp_path, ["solo"])
    try:
        yield rig
    finally:
        await _close(rig)


def _job(spec: JobSpec, job_id: str, scorer: str) -> JobSpec:
    """``spec`` for another scorer: the test plugins here take no params."""
    return spec.model_copy(update={"job_id": job_id, "scorer": scorer, "params": {}})


async def test_scores_the_example_workspace_like_the_engine(rig, predicted):
    spec, root = predicted
    [done] = await rig.score(spec, root)
    expected = score_workspace(ScorerRegistry.with_builtins(), Workspace.at(root), write=False)
    assert done.result.error is None, done.result.error
    assert done.result.metrics == expected.metrics
    assert done.result.summary == expected.summary
    assert (done.scorer, done.scorer_version) == (
        "classification_f1",
        expected.versioning["version"],
    )
    written = json.loads((root / "output" / "result.json").read_text())
    assert written["metrics"] == json.loads(done.result.model_dump_json())["metrics"]


async def test_the_event_spec_wins_over_the_workspace_meta_json(rig, predicted):
    """One source of truth per job: the scorer scores with the spec its event carries and does
    not read meta.json (here made unreadable after submission)."""
    spec, root = predicted
    expected = score_workspace(ScorerRegistry.with_builtins(), Workspace.at(root), write=False)
    (root / "meta.json").write_text("{ not json")
    [done] = await rig.score(spec, root)
    assert done.result.error is None, done.result.error
    assert (done.scorer, done.result.summary) == (spec.scorer, expected.summary)


async def test_a_scorer_past_its_time_limit_is_killed_and_the_pool_scores_on(
    tmp_path, predicted, no_leaked_tasks
):
    spec, root = predicted
    rig = await _rig(tmp_path, ["solo"], time_limit=TIME_LIMIT)
    try:
        await rig.services[0].load_scorer(SLEEPY)  # at run time: the worker must pick it up
        started = time.monotonic()
        [late] = await rig.score(_job(spec, "job-sleepy", "sleepy"), root)
        assert late.result.error is not None
        assert late.result.error.code is ErrorCode.SCORE_TIMEOUT
        assert time.monotonic() - started < TIME_LIMIT + 30
        on_disk = json.loads((root / "output" / "result.json").read_text())
        assert on_disk["error"]["code"] == "SCORE_TIMEOUT"
        [next_one] = await rig.score(spec, root)  # the one worker slot was replaced
    finally:
        await _close(rig)
    assert next_one.result.error is None, next_one.result.error
    assert next_one.result.metrics


async def test_a_crashing_scorer_is_a_score_error_not_a_lost_job(rig, predicted):
    spec, root = predicted
    await rig.services[0].load_scorer(CRASHING)
    [raised] = await rig.score(_job(spec, "job-crash", "crashing"), root)
    assert raised.result.error.code is ErrorCode.SCORE_ERROR
    assert "division by zero" in raised.result.error.message
    [died] = await rig.score(_job(spec, "job-exit", "vanishing"), root)
    assert died.result.error.code is ErrorCode.SCORE_ERROR
    assert "died" in died.result.error.message
    [fine] = await rig.score(spec, root)
    assert fine.result.error is None, fine.result.error
    assert not rig.bus.dead_letters


async def test_a_broken_scorer_is_refused_before_it_reaches_any_replica(rig, tmp_path):
    service = rig.services[0]
    with pytest.raises(AutoscorerError) as caught:
        await service.load_scorer("raise ImportError('nope')\n")
    assert caught.value.code is ErrorCode.SCORER_LOAD_ERROR
    assert list((tmp_path / "plugins-solo").glob("*.py")) == []


async def test_a_scorer_loaded_on_one_replica_reaches_the_other(tmp_path, predicted, caplog):
    spec, root = predicted
    rig = await _rig(tmp_path, ["alpha", "beta"])
    alpha, beta = rig.services
    try:
        await alpha.load_scorer(plugin("shared_demo", "1.0.0", value=2.0))
        await _until(lambda: _version(beta, "shared_demo") == "1.0.0")
        source_file = tmp_path / "shared_demo_v2.py"
        source_file.write_text(plugin("shared_demo", "2.0.0", value=7.0))
        installed = await alpha.load_scorer(source_file)
        assert installed.action == "reloaded"
        await _until(lambda: _version(beta, "shared_demo") == "2.0.0")
        copy = tmp_path / "plugins-beta" / "shared_demo.py"
        assert sha256_text(copy.read_text()) == installed.sha256
        done = await rig.score(_job(spec, "job-shared", "shared_demo"), root, count=2)
        assert [e.result.summary["value"] for e in done] == [7.0, 7.0]  # both replicas' workers
        assert {e.scorer_version for e in done} == {"2.0.0"}
        assert len({e.event_id for e in done}) == 1  # one request, one answer, whoever scored
        caplog.set_level("INFO", logger="services.scorer.service")
        await beta.load_scorer(source_file)  # same bytes: alpha keeps what it has
        await _until(lambda: "already here" in caplog.text)
        assert await alpha.remove_scorer("shared_demo") == ["shared_demo"]
        await _until(lambda: _version(beta, "shared_demo") is None)
        assert not copy.exists()
    finally:
        await _close(rig)


async def test_hot_reload_reaches_the_workers(tmp_path, predicted, no_leaked_tasks):
    spec, root = predicted
    watched = tmp_path / "watched"
    watched.mkdir()
    rig = await _rig(tmp_path, ["hot"], plugin_paths=[watched], watch=True)
    [service] = rig.services
    try:
        (watched / "hot.py").write_text(plugin("hot_demo", "1.0.0", value=3.0))
        await _until(lambda: _version(service, "hot_demo") == "1.0.0")
        [first] = await rig.score(_job(spec, "job-hot-1", "hot_demo"), root)
        (watched / "hot.py").write_text(plugin("hot_demo", "1.1.0", value=4.0))
        await _until(lambda: _version(service, "hot_demo") == "1.1.0")
        [second] = await rig.score(_job(spec, "job-hot-2", "hot_demo"), root)
    finally:
        await _close(rig)
    assert (first.result.summary["value"], first.scorer_version) == (3.0, "1.0.0")
    assert (second.result.summary["value"], second.scorer_version) == (4.0, "1.1.0")


def _version(service: ScorerService, name: str) -> str | None:
    try:
        return service.registry.get(name).info.version
    except AutoscorerError:
        return None


async def _until(check, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_close_hands_back_what_is_still_scoring(tmp_path, predicted, no_leaked_tasks):
    spec, root = predicted
    bus = MemoryBus(drain_timeout=2.0)
    base = _service(bus, tmp_path, "closing", grace_s=0.3)
    config = dataclasses.replace(base.config, retry=RetryPolicy(max_attempts=2, delays=(0.05,)))
    service = ScorerService(config, bus, base.registry, ScoringPool(1, 60.0))
    rig = Rig(bus, [service], [])
    await bus.subscribe(Subscription("observer", ["score.completed"], _collect(rig.completed)))
    await service.start()
    await bus.start()
    try:
        await service.load_scorer(SLEEPY)
        job = _job(spec, "job-closing", "sleepy")
        await bus.publish(ScoreRequested(job_id=job.job_id, spec=job, workspace=str(root)))
        await _until((root / "output" / "scoring.started").exists)
        async with asyncio.timeout(10):
            await service.close()
        await _until(lambda: len(bus.dead_letters) == 1)
    finally:
        await _close(rig)
    [dead] = bus.dead_letters
    assert (dead.attempt, dead.error.code) == (2, ErrorCode.RESOURCE_ERROR)
    assert dead.error.details["reason"] == "handed_back"
    assert rig.completed == []


def _collect(into: list[ScoreCompleted]):
    async def collect(event: Event) -> None:
        assert isinstance(event, ScoreCompleted)
        into.append(event)

    return collect


async def test_a_file_already_on_shared_storage_is_still_loaded(tmp_path, predicted):
    rig = await _rig(tmp_path, ["alpha", "beta"])
    alpha, beta = rig.services
    try:
        source = plugin("pre_placed", "1.0.0", value=1.0)
        # as if another replica sharing beta's plugin_dir had written it already
        (tmp_path / "plugins-beta").mkdir(exist_ok=True)
        (tmp_path / "plugins-beta" / "pre_placed.py").write_text(source)
        assert _version(beta, "pre_placed") is None
        await alpha.load_scorer(source)
        await _until(lambda: _version(beta, "pre_placed") == "1.0.0")
    finally:
        await _close(rig)


SLOW = """
import time

from shared.models import Result
from shared.scoring import register


@register("slow_count", version="1.0.0", task_type="demo", description="notes each run, slowly",
          expected_files=(), primary_metric="value")
def slow_count(ws, params):
    with open(ws.output_dir / "scorings", "a") as f:
        f.write("scored\\n")
    time.sleep(1.5)
    return Result(summary={"value": 1.0})
"""


async def test_a_broker_blip_does_not_redo_a_scoring_its_redelivery_joins_it(rig, predicted):
    spec, root = predicted
    await rig.services[0].load_scorer(SLOW)
    job = _job(spec, "job-blip", "slow_count")
    request = ScoreRequested(job_id=job.job_id, spec=job, workspace=str(root))
    await rig.bus.publish(request)
    await _until((root / "output" / "scorings").exists)

    # the delivery's channel dies: the bus cancels the handler and delivers the request again
    assert await rig.bus.blip([rig.services[0].config.requests_queue]) == 1
    async with asyncio.timeout(30):
        while not rig.of(job.job_id):
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    await rig.bus.publish(request)  # a later duplicate (the scheduler's relay) is answered alike
    async with asyncio.timeout(10):
        while len(rig.of(job.job_id)) < 2:
            await asyncio.sleep(0.02)

    done = rig.of(job.job_id)
    assert done[0].result.error is None, done[0].result.error
    assert {e.event_id for e in done} == {derived_event_id(request.event_id, "score.completed")}
    assert (root / "output" / "scorings").read_text() == "scored\n", "scored again"
    assert not rig.bus.dead_letters


async def test_the_hot_reload_watcher_runs_under_the_supervisor(tmp_path, no_leaked_tasks):
    bus = MemoryBus(drain_timeout=2.0)
    plugins = tmp_path / "watched"
    plugins.mkdir()
    service = _service(bus, tmp_path, "watching", plugin_paths=[str(plugins)], watch=True)
    await service.start()
    try:
        health = service.supervisor.health()
        assert set(health) == {"watcher", "announce"}
        assert health["watcher"].healthy
        assert service.supervisor.unhealthy() == []
    finally:
        await service.close()


async def test_close_hands_back_a_scoring_still_waiting_for_a_worker(
    tmp_path, predicted, no_leaked_tasks
):
    spec, root = predicted
    bus = MemoryBus(drain_timeout=2.0)
    base = _service(bus, tmp_path, "crowded", grace_s=0.1)
    config = dataclasses.replace(base.config, retry=RetryPolicy(max_attempts=2, delays=(0.05,)))
    service = ScorerService(config, bus, base.registry, ScoringPool(1, 60.0))
    rig = Rig(bus, [service], [])
    await bus.subscribe(Subscription("observer", ["score.completed"], _collect(rig.completed)))
    await service.start()
    await bus.start()
    try:
        await service.load_scorer(SLOW)
        first, second = (_job(spec, f"job-{n}", "slow_count") for n in ("first", "second"))
        await bus.publish(ScoreRequested(job_id=first.job_id, spec=first, workspace=str(root)))
        await _until((root / "output" / "scorings").exists)
        await bus.publish(ScoreRequested(job_id=second.job_id, spec=second, workspace=str(root)))
        # after a blip the second request is delivered while the first still holds the worker
        assert await bus.blip([config.requests_queue], redeliver_after=30.0) == 1
        await _until(lambda: service._busy == 2)  # both scorings belong to the service
        async with asyncio.timeout(15):
            await service.close()
        await _until(lambda: len(bus.dead_letters) == 1)
    finally:
        await _close(rig)
    [dead] = bus.dead_letters
    assert dead.error.details["reason"] == "handed_back"
    assert rig.completed == []
