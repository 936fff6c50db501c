"""shared.metrics: what each part records, read back from the Prometheus text exposition.

The flow test runs ``autoscorer serve``'s composition (in-memory bus, SQLite store, local backend:
the embedded mode's real parts) with one job that succeeds and one whose predictions the scorer
refuses, and reads the gateway's GET /metrics as Prometheus would.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import JobSubmitted
from shared.jobs import Job, JobStatus, StatusChange, new_job
from shared.metrics import Metrics, instrument_store, task_type_label, time_in_states
from shared.models import JobSpec, RunOutcome
from shared.store_sqlite import SqliteJobStore
from shared.supervise import Supervisor
from tests.e2e.harness import make_settings, running_platform

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str | bytes) -> Samples:
    """Every sample of an exposition: (name, labels) -> value."""
    if isinstance(text, bytes):
        text = text.decode()
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


def finished_job(
    status: JobStatus, *steps: tuple[JobStatus, float], task: str = "regression"
) -> Job:
    """A job whose history moves through ``steps`` (state, seconds after submission)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    job = new_job(JobSpec(scorer="regression_rmse", task_type=task), workspace="/ws")
    history = [StatusChange(status=JobStatus.SUBMITTED, at=start)]
    history += [StatusChange(status=s, at=start + timedelta(seconds=t)) for s, t in steps]
    return job.model_copy(update={"status": status, "history": history})


def test_a_finished_job_counts_once_with_its_times_from_its_history() -> None:
    metrics = Metrics()
    Q, R, S = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SCORING
    # a platform retry: queued twice (1 s + 2 s), running twice (4 s + 8 s), scoring 16 s
    job = finished_job(
        JobStatus.SUCCEEDED, (Q, 1), (R, 2), (Q, 6), (R, 8), (S, 16), (JobStatus.SUCCEEDED, 32)
    )
    assert time_in_states(job) == {JobStatus.SUBMITTED: 1, Q: 3, R: 12, S: 16}
    metrics.job_finished(job)
    found = samples(metrics.exposition())
    labels = {"status": "succeeded", "task_type": "regression", "fault": "none", "code": "none"}
    assert value(found, "autoscorer_jobs_finished_total", **labels) == 1
    assert value(found, "autoscorer_job_queue_wait_seconds_sum", task_type="regression") == 3
    assert value(found, "autoscorer_job_run_seconds_sum") == 12
    assert value(found, "autoscorer_job_scoring_seconds_sum") == 16
    assert value(found, "autoscorer_job_end_to_end_seconds_sum", status="succeeded") == 32


def test_a_job_that_never_ran_observes_no_run_time_and_its_fault_and_code_are_labels() -> None:
    metrics = Metrics()
    error = AutoscorerError(ErrorCode.SCORE_ERROR, "x", stage=Stage.SCORING).to_info()
    job = finished_job(JobStatus.FAILED, (JobStatus.FAILED, 5), task="free text " * 10)
    metrics.job_finished(job.model_copy(update={"error": error}))
    found = samples(metrics.exposition())
    finished = "autoscorer_jobs_finished_total"
    assert value(found, finished, task_type="other", code="SCORE_ERROR") == 1
    assert value(found, "autoscorer_job_run_seconds_count") == 0
    assert value(found, "autoscorer_job_end_to_end_seconds_count", status="failed") == 1


def test_the_image_pull_time_comes_from_the_last_run_outcome() -> None:
    metrics = Metrics()
    job = finished_job(JobStatus.SUCCEEDED, (JobStatus.QUEUED, 1))
    metrics.job_finished(job)  # no run outcome: nothing observed
    outcome = RunOutcome(
        job_id=job.job_id, backend="docker", status="succeeded", extra={"image_pull_s": 2.5}
    )
    metrics.job_finished(job.model_copy(update={"run_outcome": outcome}))
    found = samples(metrics.exposition())
    assert value(found, "autoscorer_job_image_pull_seconds_count") == 1
    assert value(found, "autoscorer_job_image_pull_seconds_sum", task_type="regression") == 2.5


def test_task_types_are_folded_into_a_bounded_set() -> None:
    assert task_type_label("classification") == "classification"
    assert task_type_label("job-1234") == "other"


async def test_instrumented_store_times_each_operation_and_its_errors(tmp_path: Path) -> None:
    metrics = Metrics()
    store = instrument_store(SqliteJobStore(tmp_path / "jobs.sqlite3"), metrics)
    await store.init()
    try:
        job = new_job(JobSpec(scorer="regression_rmse"), workspace="/ws")
        await store.create(job)
        assert (await store.get(job.job_id)) is not None
        with pytest.raises(AutoscorerError):  # no such job: timed as an error
            await store.transition("nope", JobStatus.SUBMITTED, JobStatus.QUEUED)
    finally:
        await store.close()
    found = samples(metrics.exposition())
    count = "autoscorer_store_operation_seconds_count"
    assert value(found, count, op="create", outcome="ok") == 1
    assert value(found, count, op="get", outcome="ok") == 1
    assert value(found, count, op="transition", outcome="error") == 1


async def test_a_dead_lettered_message_is_counted_by_queue_and_code() -> None:
    metrics = Metrics()
    bus = MemoryBus(metrics=metrics)

    async def refuse(event: object) -> None:
        raise AutoscorerError(ErrorCode.BAD_FORMAT, "no", stage=Stage.PLATFORM)

    await bus.subscribe(Subscription("m.q", ["job.submitted"], refuse))
    await bus.start()
    try:
        spec = JobSpec(job_id="j1", scorer="regression_rmse")
        await bus.publish(JobSubmitted(job_id="j1", spec=spec, workspace="/ws", submitter="a"))
        for _ in range(100):
            if bus.dead_letters:
                break
            await asyncio.sleep(0.02)
    finally:
        await bus.close()
    found = samples(metrics.exposition())
    assert value(found, "autoscorer_bus_dead_letters_total", queue="m.q", code="BAD_FORMAT") == 1


async def test_supervised_loops_show_their_health() -> None:
    metrics = Metrics()
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.01, unhealthy_after=2)
    metrics.watch_loops(sup)

    async def fail() -> None:
        raise RuntimeError("down")

    async def fine() -> None:
        return None

    sup.every("bad", 0.01, fail)
    sup.every("good", 0.01, fine)
    try:
        for _ in range(200):
            if sup.unhealthy():
                break
            await asyncio.sleep(0.01)
        found = samples(metrics.exposition())
    finally:
        await sup.close()
    assert value(found, "autoscorer_loop_healthy", service="svc", loop="bad") == 0
    assert value(found, "autoscorer_loop_healthy", service="svc", loop="good") == 1
    assert value(found, "autoscorer_loop_failures_total", loop="bad") >= 2


def refused_predictions(platform_root: Path, name: str) -> None:
    """Make the workspace's participant write predictions the scorer refuses."""
    predict = platform_root / name / "submission" / "predict.py"
    predict.write_text(
        "from pathlib import Path\n"
        "Path('output').mkdir(exist_ok=True)\n"
        "Path('output/pred.csv').write_text('id,wrong\\ns0000,fish\\n')\n"
    )


@pytest.mark.slow
async def test_embedded_flow_moves_the_counters_and_histograms(tmp_path: Path) -> None:
    async with running_platform(make_settings(tmp_path)) as platform:
        good = await platform.submit(platform.add_workspace("classification"))
        bad_ws = platform.add_workspace("classification", "refused")
        refused_predictions(platform.settings.gateway.data_root, bad_ws)
        bad = await platform.submit(bad_ws)
        ok, failed = await platform.wait(good), await platform.wait(bad)
        assert (ok["status"], failed["status"]) == ("succeeded", "failed"), failed
        code = failed["error"]["code"]
        await platform.wait_for_webhooks(2)
        await asyncio.sleep(0.3)  # the delivery's attempt is recorded after the receiver answers
        # no key: /metrics is public
        async with (
            aiohttp.ClientSession() as session,
            session.get(platform.url + "/metrics") as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    found = samples(text)
    finished = "autoscorer_jobs_finished_total"
    assert value(found, finished, status="succeeded", task_type="classification") == 1
    assert value(found, finished, status="failed", code=code, fault="participant") == 1
    assert value(found, "autoscorer_job_run_seconds_count", task_type="classification") == 2
    assert value(found, "autoscorer_job_run_seconds_sum") > 0
    assert value(found, "autoscorer_job_queue_wait_seconds_count") == 2
    assert value(found, "autoscorer_job_scoring_seconds_count") == 2
    assert value(found, "autoscorer_job_end_to_end_seconds_count", status="failed") == 1
    assert value(found, "autoscorer_scorer_errors_total", code=code) == 1
    assert value(found, "autoscorer_scorer_errors_total", scorer="classification_f1") == 1
    assert value(found, "autoscorer_webhook_deliveries_total", outcome="delivered") >= 1
    assert value(found, "autoscorer_webhook_delivery_lag_seconds_count") >= 1
    assert value(found, "autoscorer_store_operation_seconds_count", op="transition") >= 8
    assert value(found, "autoscorer_executor_runs_in_flight", backend="local") == 0
    slots = platform.settings.executor_service.concurrency
    assert value(found, "autoscorer_executor_run_slots", backend="local") == slots
    assert value(found, "autoscorer_outbox_backlog") == 0
    loops = [ls for (n, ls), _ in found.items() if n == "autoscorer_loop_healthy"]
    services = {dict(ls)["service"] for ls in loops}
    assert {"gateway", "scheduler", "executor.local"} <= services  # the scorer's: only watch
    assert all(v == 1 for (n, _), v in found.items() if n == "autoscorer_loop_healthy")
    # bounded labels: no job id, workspace or event id anywhere
    every_label = {v for (_, ls) in found for _, v in ls}
    assert not {good, bad, ok["workspace"], failed["workspace"]} & every_label
