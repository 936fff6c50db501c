"""Logs (shared.logs, shared.logctx), the per-job event log (shared.joblog) and the console span
exporter: unit checks, a handler on the memory bus, and one job through the embedded platform."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from services.cli.main import main as cli_main
from services.scheduler.context import log_transition
from services.scheduler.main import create_scheduler
from services.scorer.pool import start_worker
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import LogSettings, OtelSettings, Settings, load_settings
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import Event, RunRequested
from shared.joblog import (
    MAX_LINE_BYTES,
    TRUNCATED,
    append_line,
    job_event,
    job_log_path,
    record,
    set_job_log_cap,
)
from shared.jobs import JobStatus, StatusChange, new_job, now_ms
from shared.logctx import job_context
from shared.logs import JsonFormatter, TextFormatter, log_handler, make_formatter
from shared.models import ContainerSpec, JobSpec
from shared.store_sqlite import SqliteJobStore
from shared.telemetry import span_exporter, tracer_provider
from tests.e2e.harness import EXAMPLES, free_port, make_settings, running_platform

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SERVICES = {"gateway", "scheduler", "executor", "scorer"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """JSON lines of every record at DEBUG while the test runs (the root keeps pytest's own)."""
    out = io.StringIO()
    handler = log_handler(LogSettings(format="json"), "serve", out)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def log_record(msg: str = "hello", name: str = "services.scheduler.context") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, None, None)


def test_json_line_has_every_field_and_parses() -> None:
    out = io.StringIO()
    logger = logging.getLogger("services.executor.service.test")
    handler = log_handler(LogSettings(format="json"), "executor", out)
    logger.addHandler(handler)
    try:
        with job_context("job-1", 2):
            error = AutoscorerError(ErrorCode.TIMEOUT_ERROR, "late", stage=Stage.EXECUTION)
            logger.error('it "broke"\nbadly', exc_info=error)
    finally:
        logger.removeHandler(handler)
    [line] = lines(out)
    assert ISO_UTC.match(line["timestamp"])
    assert line["level"] == "ERROR"
    assert line["service"] == "executor"
    assert line["logger"] == "services.executor.service.test"
    assert line["message"] == 'it "broke"\nbadly'
    assert (line["job_id"], line["attempt"]) == ("job-1", 2)
    assert line["error_code"] == "TIMEOUT_ERROR"
    assert {"trace_id", "span_id"} <= line.keys()


def test_text_format_has_an_iso_timestamp_and_the_job() -> None:
    item = log_record()
    item.job_id, item.attempt = "job-7", 1
    text = TextFormatter("serve").format(item)
    assert ISO_UTC.match(text), text
    assert " INFO scheduler services.scheduler.context [job=job-7 attempt=1] hello" in text


def test_a_record_outside_the_services_package_names_the_process() -> None:
    line = json.loads(JsonFormatter("scorer").format(log_record(name="shared.bus_dispatch")))
    assert line["service"] == "scorer"


def test_the_format_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_formatter(load_settings().log, "x"), TextFormatter)
    monkeypatch.setenv("AUTOSCORER__LOG__FORMAT", "json")
    monkeypatch.setenv("AUTOSCORER__LOG__LEVEL", "debug")
    settings = load_settings()
    assert settings.log.level == "DEBUG"
    assert isinstance(make_formatter(settings.log, "x"), JsonFormatter)
    monkeypatch.setenv("AUTOSCORER__LOG__FORMAT", "xml")
    with pytest.raises(AutoscorerError):
        load_settings()


async def test_a_handler_on_the_memory_bus_logs_its_job_and_span(captured: io.StringIO) -> None:
    provider = TracerProvider()
    bus = MemoryBus(tracer=provider.get_tracer("test"))
    seen: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        span = trace.get_current_span().get_span_context()
        seen.append((f"{span.trace_id:032x}", f"{span.span_id:016x}"))
        logging.getLogger("services.executor.test").info("running it")
        done.set()

    await bus.subscribe(Subscription("logs.test", ["run.requested.local"], handler))
    await bus.start()
    try:
        spec = JobSpec(job_id="job-bus", scorer="classification")
        await bus.publish(
            RunRequested(
                job_id="job-bus", spec=spec, workspace="/nowhere", backend="local", attempt=3
            )
        )
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await bus.close()
    [line] = [x for x in lines(captured) if x["message"] == "running it"]
    assert line["service"] == "executor"
    assert (line["job_id"], line["attempt"]) == ("job-bus", 3)
    assert (line["trace_id"], line["span_id"]) == seen[0]
    assert line["trace_id"] != "0" * 32


def test_the_console_exporter_writes_one_json_object_per_span() -> None:
    out = io.StringIO()
    settings = OtelSettings(enabled=True, exporter="console")
    provider = tracer_provider(settings, "test")
    assert provider is not None
    exporter = span_exporter(settings, out)
    assert exporter is not None
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("one"):
        pass
    provider.shutdown()
    spans = [json.loads(line) for line in out.getvalue().splitlines()]
    assert any(s["name"] == "one" for s in spans)
    assert span_exporter(OtelSettings(exporter="none")) is None
    assert span_exporter(OtelSettings(exporter="otlp")) is None  # no endpoint: not exported


def test_the_job_log_stops_at_its_cap_with_one_marker(tmp_path: Path) -> None:
    path = job_log_path(tmp_path)
    line = job_event("transition", "j", service="scheduler", attempt=1, to_state="queued")
    written = [append_line(path, line, cap=4096) for _ in range(200)]
    assert 0 < sum(written) < 200
    content = path.read_bytes()
    assert len(content) <= 4096 + len(line) + 128
    events = [json.loads(x)["event"] for x in content.splitlines()]
    assert events.count(TRUNCATED) == 1
    assert events[-1] == TRUNCATED


def test_the_job_log_does_not_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    path = job_log_path(tmp_path / "ws")
    path.parent.mkdir(parents=True)
    path.symlink_to(target)
    with pytest.raises(OSError):
        append_line(path, b"{}\n")
    assert target.read_text() == ""


@pytest.fixture
def global_tracing() -> None:
    """An SDK provider behind the global one, so the services' spans have real trace ids."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


REAL_STACK = {
    "bus": "rabbitmq",
    "store": "mongo",
    "rabbit_url": os.environ.get(
        "AUTOSCORER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"
    ),
    "mongo_url": os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017"),
}


@pytest.mark.slow
@pytest.mark.usefixtures("global_tracing")
@pytest.mark.parametrize("stack", [{}, REAL_STACK], ids=["embedded", "rabbitmq-mongo"])
async def test_one_job_logs_one_trace_across_four_services_and_its_job_log(
    tmp_path: Path, captured: io.StringIO, stack: dict[str, str]
) -> None:
    """``serve``'s composition: memory bus + SQLite, then RabbitMQ + the MongoDB-wire store."""
    async with running_platform(make_settings(tmp_path, **stack)) as platform:
        workspace = platform.add_workspace("classification")
        job_id = await platform.submit(workspace)
        job = await platform.wait(job_id)
        await platform.wait_for_webhooks(1)
    assert job["status"] == "succeeded"
    mine = [x for x in lines(captured) if x["job_id"] == job_id]
    assert {x["service"] for x in mine} >= SERVICES, {x["service"] for x in mine}
    shown = [(x["trace_id"], x["logger"], x["message"][:60]) for x in mine]
    assert len({x["trace_id"] for x in mine}) == 1, shown
    moves = [x["message"].split(" (")[0] for x in mine if x["level"] == "INFO"]
    assert [m for m in moves if m.startswith("job ")] == [
        f"job {job_id} -> submitted",
        f"job {job_id} submitted -> queued",
        f"job {job_id} queued -> running",
        f"job {job_id} running -> scoring",
        f"job {job_id} scoring -> succeeded",
    ]

    text = job_log_path(tmp_path / "data" / workspace).read_text()
    events = [json.loads(x) for x in text.splitlines()]
    assert {e["job_id"] for e in events} == {job_id}
    moved = [e["data"] for e in events if e["event"] == "transition"]
    assert [m["to_state"] for m in moved] == [
        "submitted",
        "queued",
        "running",
        "scoring",
        "succeeded",
    ]
    assert all(m["in_state_s"] >= 0 for m in moved[1:])
    steps = [e["event"] for e in events]
    assert {"run_started", "run_completed", "scoring_started", "scoring_completed"} <= set(steps)
    run = next(e for e in events if e["event"] == "run_completed")
    assert (run["attempt"], run["data"]["status"]) == (1, "succeeded")
    assert run["data"]["duration_s"] >= 0
    scored = next(e for e in events if e["event"] == "scoring_completed")
    assert "f1_macro" in scored["data"]["summary"]
    assert scored["data"]["timing"]["score_s"] >= 0
    assert moved[-1]["total_s"] >= moved[-1]["in_state_s"]


@pytest.mark.slow
async def test_a_failing_embedded_job_logs_its_error_code_and_its_job_log_is_capped(
    tmp_path: Path, captured: io.StringIO
) -> None:
    set_job_log_cap(4096)
    try:
        async with running_platform(make_settings(tmp_path)) as platform:
            workspace = platform.add_workspace("classification")
            meta = tmp_path / "data" / workspace / "meta.json"
            spec = json.loads(meta.read_text())
            spec["container"]["cmd"] = ["python", "-c", "import sys; sys.exit(3)"]
            meta.write_text(json.dumps(spec))
            path = job_log_path(tmp_path / "data" / workspace)
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps({"event": "old", "pad": "x" * 4050}) + "\n")
            job_id = await platform.submit(workspace)
            job = await platform.wait(job_id)
    finally:
        set_job_log_cap(1024 * 1024)
    assert job["status"] == "failed"
    code = job["error"]["code"]
    mine = [x for x in lines(captured) if x["job_id"] == job_id and x["level"] == "INFO"]
    failed = [x for x in mine if re.match(rf"job {job_id} \w+ -> failed", x["message"])]
    assert len(failed) == 1, [x["message"] for x in mine]
    assert failed[0]["error_code"] == code, failed
    content = path.read_bytes()
    assert len(content) <= 4096 + 8192 + 128
    events = [json.loads(x)["event"] for x in content.splitlines()]
    assert events[-1] == TRUNCATED and events.count(TRUNCATED) == 1


@pytest.mark.slow
async def test_serve_logs_json_to_stderr_and_spans_to_stdout(tmp_path: Path) -> None:
    """``autoscorer serve`` as a user starts it: the settings pick JSON logs and the console
    exporter; a job's INFO lines (its transitions) and its spans share one trace id."""
    shutil.copytree(
        EXAMPLES / "classification",
        tmp_path / "data" / "ws",
        ignore=shutil.ignore_patterns("output", "logs", ".autoscorer"),
    )
    port = free_port()
    env = {
        **os.environ,
        "AUTOSCORER__LOG__FORMAT": "json",
        "AUTOSCORER__OTEL__ENABLED": "true",
        "AUTOSCORER__OTEL__EXPORTER": "console",
        "AUTOSCORER__GATEWAY__PORT": str(port),
        "AUTOSCORER__GATEWAY__DATA_ROOT": str(tmp_path / "data"),
        "AUTOSCORER__GATEWAY__INSECURE_NO_AUTH": "true",
    }
    env.pop("AUTOSCORER_LOG_LEVEL", None)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli.main",
            "serve",
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=stdout,
            stderr=stderr,
        )
    try:
        job_id = await submit_and_wait(f"http://127.0.0.1:{port}")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
    logged = [json.loads(x) for x in err.read_text().splitlines() if x.startswith("{")]
    assert all(ISO_UTC.match(x["timestamp"]) for x in logged)
    moves = [x for x in logged if x["job_id"] == job_id and x["level"] == "INFO"]
    assert [x["message"].split(" (")[0] for x in moves][-1] == f"job {job_id} scoring -> succeeded"
    [trace_id] = {x["trace_id"] for x in moves}
    spans = [json.loads(x) for x in out.read_text().splitlines()]
    assert spans, "no span reached stdout"
    assert f"0x{trace_id}" in {s["context"]["trace_id"] for s in spans}


async def submit_and_wait(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        for _ in range(400):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        break
            await asyncio.sleep(0.1)
        async with session.post(url + "/v1/jobs", json={"workspace": "ws"}) as resp:
            job_id = str((await resp.json())["data"]["job_id"])
        for _ in range(600):
            async with session.get(f"{url}/v1/jobs/{job_id}") as resp:
                if (await resp.json())["data"]["status"] == "succeeded":
                    return job_id
            await asyncio.sleep(0.1)
    raise AssertionError(f"{job_id} did not succeed")


def test_the_cli_pipeline_writes_its_steps_to_the_job_log(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(
        EXAMPLES / "classification",
        ws,
        ignore=shutil.ignore_patterns("output", "logs", ".autoscorer"),
    )
    assert cli_main(["pipeline", str(ws), "--backend", "local", "--json"]) == 0
    events = [json.loads(x) for x in job_log_path(ws).read_text().splitlines()]
    assert [e["event"] for e in events] == [
        "run_started",
        "run_completed",
        "scoring_started",
        "scoring_completed",
    ]
    assert {(e["service"], e["job_id"]) for e in events} == {("cli", "example-classification")}
    assert events[1]["data"]["status"] == "succeeded" and events[1]["data"]["duration_s"] > 0
    assert events[3]["data"]["timing"]["score_s"] >= 0


def test_a_transition_outside_any_span_logs_the_jobs_own_trace(captured: io.StringIO) -> None:
    """The reaper and the relay move jobs with no span current: the line still carries the
    trace the job was submitted under, and its failure code."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    before = new_job(
        JobSpec(job_id="job-reaped", scorer="classification"),
        workspace="/nowhere",
        trace_context={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    error = AutoscorerError(ErrorCode.TIMEOUT_ERROR, "overdue", stage=Stage.PLATFORM).to_info()
    after = before.model_copy(
        update={
            "status": JobStatus.FAILED,
            "error": error,
            "history": [*before.history, StatusChange(status=JobStatus.FAILED, at=now_ms())],
        }
    )
    log_transition(before, after, "overdue")
    [line] = [x for x in lines(captured) if x["job_id"] == "job-reaped"]
    assert line["message"] == "job job-reaped submitted -> failed TIMEOUT_ERROR (overdue)"
    assert (line["trace_id"], line["error_code"], line["level"]) == (
        trace_id,
        "TIMEOUT_ERROR",
        "INFO",
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=st.lists(
        st.text(st.characters(exclude_categories=()), max_size=3000), min_size=1, max_size=40
    ),
    cap=st.integers(min_value=4096, max_value=16384),
)
def test_any_job_log_is_json_lines_below_its_cap(
    tmp_path_factory: pytest.TempPathFactory, messages: list[str], cap: int
) -> None:
    """Whatever a step reports (error messages come from participants' programs): each line
    is one JSON object, the file stays below cap + one line + the marker, the marker ends it."""
    workspace = tmp_path_factory.mktemp("ws")
    for text in messages:
        record(workspace, "run_completed", "j", service="executor", cap=cap, message=text)
    content = job_log_path(workspace).read_bytes()
    assert len(content) <= cap + MAX_LINE_BYTES + 128
    events = [json.loads(line) for line in content.split(b"\n")[:-1]]
    assert content.endswith(b"\n")
    kinds = [e["event"] for e in events]
    assert kinds.count(TRUNCATED) <= 1
    assert TRUNCATED not in kinds[:-1]
    kept = [e["data"].get("message") for e in events if e["event"] == "run_completed"]
    assert all(m is None or m in messages for m in kept)


def root_formatter() -> str:
    """Run in a scoring worker: the formatter its root logger writes with."""
    handler = logging.getLogger().handlers[0]
    assert handler.formatter is not None
    return type(handler.formatter).__name__


async def test_a_scoring_worker_logs_in_its_parents_format() -> None:
    """A spawned worker starts with no logging; the pool hands it the process's set-up."""
    context = multiprocessing.get_context("spawn")
    logs = (LogSettings(format="json"), "scorer")
    with ProcessPoolExecutor(
        1, context, initializer=start_worker, initargs=(os.getpid(), logs)
    ) as pool:
        assert await asyncio.wrap_future(pool.submit(root_formatter)) == "JsonFormatter"


@pytest.mark.slow
@pytest.mark.usefixtures("global_tracing")
async def test_heartbeats_of_a_long_run_stay_in_the_jobs_trace(
    tmp_path: Path, captured: io.StringIO
) -> None:
    """The executor's heartbeat loop publishes outside any handler: its beats (and the lines of
    the scheduler handling them) still carry the job's trace id."""
    async with running_platform(make_settings(tmp_path)) as platform:
        workspace = platform.add_workspace("classification")
        meta = tmp_path / "data" / workspace / "meta.json"
        spec = json.loads(meta.read_text())
        spec["container"]["cmd"] = ["sh", "-c", "sleep 2.5 && python3 submission/predict.py"]
        meta.write_text(json.dumps(spec))
        job_id = await platform.submit(workspace)
        assert (await platform.wait(job_id))["status"] == "succeeded"
    mine = [x for x in lines(captured) if x["job_id"] == job_id]
    beats = [x for x in mine if x["message"].startswith("run.heartbeat handled")]
    assert beats, "no heartbeat was handled"
    assert len({x["trace_id"] for x in mine}) == 1


async def test_lines_of_the_reapers_and_relays_work_carry_the_job(
    tmp_path: Path, captured: io.StringIO
) -> None:
    """Background loops are no bus handler: the reaper binds each job it takes. Here the reaper
    queues a job whose JobSubmitted was lost, and the relay cannot route its RunRequested
    (no executor subscribed): each line about it names the job."""
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.init()
    bus = MemoryBus()
    await bus.start()
    try:
        scheduler = create_scheduler(Settings(), bus, store)
        container = ContainerSpec(image="participant:1")
        spec = JobSpec(job_id="job-lost", scorer="classification", container=container)
        await store.create(new_job(spec, workspace="/nowhere", submitted_wait=timedelta(0)))
        assert await scheduler.reap_overdue() == 1
    finally:
        await bus.close()
        await store.close()
    about = [x for x in lines(captured) if "job-lost" in x["message"]]
    assert len(about) >= 3, [(x["logger"], x["message"]) for x in about]
    assert all(x["job_id"] == "job-lost" for x in about), about
