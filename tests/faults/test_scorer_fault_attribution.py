"""Whose fault is it? One table, each case produced by the real component (docs/ERRORS.md):

organiser data and config -> organiser; participant image, command, output -> participant;
infrastructure -> platform, the only retryable fault.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.executor.docker.backend import DockerExecutor
from services.executor.docker.config import DockerConfig
from services.executor.local import LocalConfig, LocalExecutor
from services.scorer.engine import score_workspace
from services.scorer.pool import ScoreTask, ScoringPool
from services.scorer.registry import ScorerRegistry
from shared.bus_rabbitmq import RabbitBus, RabbitBusConfig
from shared.errors import AutoscorerError, ErrorInfo
from shared.models import JobSpec, RunOutcome
from shared.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUSYBOX = "autoscorer-test/busybox:1"
PYTHON = "autoscorer-test/python:3.11"

Expected = tuple[str, str, str, bool]  # code, stage, fault, retryable
PART, ORG, PLAT = "participant", "organiser", "platform"


def _regression(tmp_path: Path, gt: str | None, pred: str | None) -> Workspace:
    root = tmp_path / f"ws-{uuid.uuid4().hex[:8]}"
    shutil.copytree(EXAMPLES / "regression", root, ignore=shutil.ignore_patterns("output"))
    (root / "output").mkdir()
    gt_file = root / "input" / "gt.csv"
    if gt is None:
        gt_file.unlink()
    else:
        gt_file.write_text(gt)
    if pred is not None:
        (root / "output" / "pred.csv").write_text(pred)
    return Workspace.at(root)


GOOD_GT = "id,value\na,1.0\nb,2.0\n"
GOOD_PRED = "id,value\na,1.5\nb,2.5\n"

SCORING_CASES: dict[str, tuple[str | None, str | None, Expected]] = {
    "gt missing": (None, GOOD_PRED, ("MISSING_FILE", "config", ORG, False)),
    "gt NaN": ("id,value\na,nan\nb,2.0\n", GOOD_PRED, ("BAD_FORMAT", "config", ORG, False)),
    "gt inf": ("id,value\na,inf\nb,2.0\n", GOOD_PRED, ("BAD_FORMAT", "config", ORG, False)),
    "gt bad header": ("key,value\na,1\nb,2\n", GOOD_PRED, ("BAD_FORMAT", "config", ORG, False)),
    "gt not utf-8": ("id,value\na,1\n", GOOD_PRED, ("BAD_FORMAT", "config", ORG, False)),
    "gt duplicate ids": ("id,value\na,1\na,2\n", GOOD_PRED, ("BAD_FORMAT", "config", ORG, False)),
    "pred missing": (GOOD_GT, None, ("MISSING_FILE", "validation", PART, False)),
    "pred NaN": (GOOD_GT, "id,value\na,nan\nb,2\n", ("BAD_FORMAT", "validation", PART, False)),
    "pred bad header": (GOOD_GT, "id,y\na,1\nb,2\n", ("BAD_FORMAT", "validation", PART, False)),
    "pred ids differ": (GOOD_GT, "id,value\na,1\nc,2\n", ("MISMATCH", "validation", PART, False)),
}


def _check(error: ErrorInfo | None, expected: Expected) -> None:
    assert error is not None
    found = (error.code.value, error.stage.value, error.fault.value, error.retryable)
    assert found == expected, error.message


@pytest.mark.parametrize("case", sorted(SCORING_CASES))
def test_scoring_inputs(tmp_path: Path, case: str) -> None:
    gt, pred, expected = SCORING_CASES[case]
    ws = _regression(tmp_path, gt, pred)
    if case == "gt not utf-8":
        (ws.root / "input" / "gt.csv").write_bytes(b"\xff\xfeid,value\n")
        expected = ("PARSE_ERROR", "config", ORG, False)
    result = score_workspace(ScorerRegistry.with_builtins(), ws)
    _check(result.error, expected)


def _detection(tmp_path: Path) -> Workspace:
    root = tmp_path / "det"
    shutil.copytree(EXAMPLES / "detection", root)
    (root / "output").mkdir(exist_ok=True)
    (root / "output" / "pred.json").write_text("[]")
    return Workspace.at(root)


def test_detection_ground_truth_is_the_organisers(tmp_path: Path) -> None:
    ws = _detection(tmp_path)
    registry = ScorerRegistry.with_builtins()
    (ws.root / "input" / "gt.json").write_text('{"images": [')
    _check(score_workspace(registry, ws).error, ("PARSE_ERROR", "config", ORG, False))
    (ws.root / "input" / "gt.json").write_text('{"images": 3, "annotations": []}')
    _check(score_workspace(registry, ws).error, ("BAD_FORMAT", "config", ORG, False))
    (ws.root / "input" / "gt.json").unlink()
    _check(score_workspace(registry, ws).error, ("MISSING_FILE", "config", ORG, False))


def test_detection_predictions_are_the_participants(tmp_path: Path) -> None:
    ws = _detection(tmp_path)
    registry = ScorerRegistry.with_builtins()
    (ws.root / "output" / "pred.json").write_text("[{")
    _check(score_workspace(registry, ws).error, ("PARSE_ERROR", "validation", PART, False))
    (ws.root / "output" / "pred.json").write_text('[{"image_id": 1}]')
    _check(score_workspace(registry, ws).error, ("BAD_FORMAT", "validation", PART, False))


def test_meta_json_is_the_organisers(tmp_path: Path) -> None:
    ws = _regression(tmp_path, GOOD_GT, GOOD_PRED)
    registry = ScorerRegistry.with_builtins()
    ws.meta_path.write_text("{not json")
    _check(score_workspace(registry, ws).error, ("PARSE_ERROR", "validation", ORG, False))
    ws.meta_path.write_text(json.dumps({"scorer": "regression_rmse", "params": {"x": 1}}))
    _check(score_workspace(registry, ws).error, ("BAD_PARAMS", "validation", ORG, False))
    ws.meta_path.write_text(json.dumps({"scorer": "no_such_scorer"}))
    _check(score_workspace(registry, ws).error, ("SCORER_NOT_FOUND", "scoring", ORG, False))
    ws.meta_path.unlink()
    _check(score_workspace(registry, ws).error, ("MISSING_FILE", "validation", ORG, False))


PLUGIN = """
import time
from shared.models import Result
from shared.scoring import register

@register("crash", version="1", task_type="demo", description="x", expected_files=(),
          primary_metric="v")
def crash(ws, params):
    raise ZeroDivisionError("oops")

@register("hang", version="1", task_type="demo", description="x", expected_files=(),
          primary_metric="v")
def hang(ws, params):
    time.sleep(600)
"""


async def test_scorer_crash_and_timeout_are_the_organisers(tmp_path: Path) -> None:
    plugin = tmp_path / "faulty.py"
    plugin.write_text(PLUGIN)
    ws = _regression(tmp_path, GOOD_GT, GOOD_PRED)
    manifest = (
        (str(plugin.resolve()), __import__("hashlib").sha256(plugin.read_bytes()).hexdigest()),
    )
    pool = ScoringPool(1, 2.0)
    await pool.start()
    try:
        crashed = await pool.score(ScoreTask(str(ws.root), "crash", {}, manifest))
        hung = await pool.score(ScoreTask(str(ws.root), "hang", {}, manifest))
    finally:
        await pool.close()
    _check(crashed.error, ("SCORE_ERROR", "scoring", ORG, False))
    _check(hung.error, ("SCORE_TIMEOUT", "scoring", ORG, False))


# -- execution -----------------------------------------------------------------------------------


async def _run_error(run: Awaitable[RunOutcome]) -> ErrorInfo | None:
    """A backend reports a failure in its outcome or raises it; either way, the error."""
    try:
        return (await run).error
    except AutoscorerError as exc:
        return exc.to_info()


def _job(
    tmp_path: Path, cmd: list[str], image: str = BUSYBOX, **fields: object
) -> tuple[JobSpec, Workspace]:
    root = tmp_path / f"job-{uuid.uuid4().hex[:8]}"
    (root / "input").mkdir(parents=True)
    (root / "input" / "gt.csv").write_text("id,label\n1,a\n")
    fields.setdefault("time_limit", 60)
    fields.setdefault("resources", {"cpu": 1, "memory": "256Mi"})
    spec = JobSpec(
        job_id=f"job-{uuid.uuid4().hex[:12]}",
        scorer="classification_f1",
        container={"image": image, "cmd": cmd},
        expected_outputs=[],
        **fields,  # type: ignore[arg-type]
    )
    (root / "meta.json").write_text(spec.model_dump_json())
    return spec, Workspace.at(root)


@pytest.mark.parametrize(
    "cmd", [["/definitely/not/here"], ["no-such-program-xyz"], ["/etc/hostname"]]
)
async def test_local_command_that_cannot_start_is_the_participants(tmp_path: Path, cmd) -> None:
    spec, ws = _job(tmp_path, cmd)
    error = await _run_error(LocalExecutor(LocalConfig()).run(spec, ws))
    _check(error, ("CONTAINER_FAILED", "execution", PART, False))


async def test_local_timeout_is_the_participants(tmp_path: Path) -> None:
    spec, ws = _job(tmp_path, [sys.executable, "-c", "import time; time.sleep(30)"], time_limit=1)
    outcome = await LocalExecutor(LocalConfig()).run(spec, ws)
    _check(outcome.error, ("TIMEOUT_ERROR", "execution", PART, False))


async def _docker_run(tmp_path: Path, cmd: list[str], image: str = BUSYBOX, **fields: object):
    spec, ws = _job(tmp_path, cmd, image, **fields)
    executor = DockerExecutor(
        DockerConfig(pull_policy="never", instance=f"attr-{uuid.uuid4().hex[:8]}")
    )
    try:
        return await executor.run(spec, ws)
    finally:
        await executor.close()


@pytest.mark.docker
@pytest.mark.parametrize("cmd", [["/definitely/not/here"], ["no-such-program-xyz"]])
async def test_docker_command_that_cannot_start_is_the_participants(tmp_path: Path, cmd) -> None:
    outcome = await _docker_run(tmp_path, cmd)
    _check(outcome.error, ("CONTAINER_FAILED", "execution", PART, False))


@pytest.mark.docker
async def test_docker_missing_image_is_the_participants(tmp_path: Path) -> None:
    outcome = await _docker_run(tmp_path, ["true"], image="autoscorer-test/absent:404")
    _check(outcome.error, ("IMAGE_NOT_PRESENT", "execution", PART, False))


@pytest.mark.docker
async def test_docker_oom_is_the_participants(tmp_path: Path) -> None:
    cmd = ["python3", "-c", "x = bytearray(512 * 1024 * 1024)"]
    outcome = await _docker_run(tmp_path, cmd, PYTHON, resources={"cpu": 1, "memory": "64Mi"})
    _check(outcome.error, ("CONTAINER_OOM", "execution", PART, False))


@pytest.mark.docker
async def test_docker_nonzero_exit_is_the_participants(tmp_path: Path) -> None:
    outcome = await _docker_run(tmp_path, ["sh", "-c", "exit 3"])
    _check(outcome.error, ("CONTAINER_EXIT_NONZERO", "execution", PART, False))


async def test_docker_engine_unreachable_is_a_retryable_platform_fault(tmp_path: Path) -> None:
    spec, ws = _job(tmp_path, ["true"])
    executor = DockerExecutor(
        DockerConfig(docker_host=f"unix://{tmp_path}/no-docker.sock", pull_policy="never")
    )
    try:
        error = await _run_error(executor.run(spec, ws))
    finally:
        await executor.close()
    _check(error, ("BACKEND_UNAVAILABLE", "execution", PLAT, True))


# -- infrastructure ------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_broker_down_is_a_retryable_platform_fault() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{_closed_port()}/"
    bus = RabbitBus(RabbitBusConfig(url=url, publish_timeout=2.0))
    with pytest.raises(AutoscorerError) as caught:
        await _bounded(bus.start)
    await bus.close()
    _check(caught.value.to_info(), ("BUS_ERROR", "platform", PLAT, True))
    collect_failed_connects()


def collect_failed_connects() -> None:
    """aiormq leaves the socket of a refused connect for the garbage collector; collect it here,
    where it is expected, rather than let its ResourceWarning fail whichever test runs next."""
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def _bounded(start: Callable[[], Awaitable[None]]) -> None:
    import asyncio

    async with asyncio.timeout(60):
        await start()


@pytest.mark.docker
async def test_docker_image_without_a_command_is_the_participants(tmp_path: Path) -> None:
    """An image with no CMD (``docker import`` of an empty tar) and no container.cmd."""
    import io
    import tarfile

    import aiodocker

    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w"):
        pass
    docker = aiodocker.Docker()
    try:
        async with docker._query(  # the engine's image import: POST /images/create?fromSrc=-
            "images/create",
            method="POST",
            params={"fromSrc": "-", "repo": "autoscorer-test/nocmd", "tag": "1"},
            data=empty.getvalue(),
            headers={"Content-Type": "application/x-tar"},
        ) as response:
            await response.read()
    finally:
        await docker.close()
    outcome = await _docker_run(tmp_path, [], image="autoscorer-test/nocmd:1")
    _check(outcome.error, ("CONTAINER_FAILED", "execution", PART, False))


# Kubernetes: no cluster here, so the pod statuses a kubelet reports are given to the classifier
# as data (the shapes containerd and CRI-O report for a command that cannot start).
K8S_CASES = {
    "containerd StartError": (
        "terminated",
        {
            "reason": "StartError",
            "exitCode": 128,
            "message": 'exec: "nope": executable file not found in $PATH',
        },
        ("CONTAINER_FAILED", "execution", PART, False),
    ),
    "CRI-O CreateContainerError": (
        "waiting",
        {
            "reason": "CreateContainerError",
            "message": 'container create failed: exec: "nope": executable file not found in $PATH',
        },
        ("CONTAINER_FAILED", "execution", PART, False),
    ),
    "RunContainerError no such file": (
        "waiting",
        {"reason": "RunContainerError", "message": "exec: /bin/x: no such file or directory"},
        ("CONTAINER_FAILED", "execution", PART, False),
    ),
    "OOMKilled": (
        "terminated",
        {"reason": "OOMKilled", "exitCode": 137},
        ("CONTAINER_OOM", "execution", PART, False),
    ),
    "missing image": (
        "waiting",
        {"reason": "ErrImageNeverPull", "message": "image not present"},
        ("IMAGE_NOT_PRESENT", "execution", PART, False),
    ),
}


@pytest.mark.parametrize("case", sorted(K8S_CASES))
def test_kubernetes_statuses(case: str) -> None:
    from services.executor.kubernetes.status import classify_waiting, terminated_error

    state, status, expected = K8S_CASES[case]
    if state == "waiting":
        verdict = classify_waiting(status)
        error = verdict.error if verdict is not None else None
    else:
        error = terminated_error(status)
    _check(error.to_info() if error is not None else None, expected)


async def test_store_down_is_a_retryable_platform_fault() -> None:
    from shared.store_mongo import MongoJobStore

    url = f"mongodb://127.0.0.1:{_closed_port()}/?serverSelectionTimeoutMS=1000"
    store = MongoJobStore.from_url(url, f"attr-{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(AutoscorerError) as caught:
            await _bounded(store.init)
    finally:
        await store.close()
    _check(caught.value.to_info(), ("STORE_ERROR", "platform", PLAT, True))


@pytest.mark.docker
async def test_docker_timeout_is_the_participants(tmp_path: Path) -> None:
    outcome = await _docker_run(tmp_path, ["sleep", "30"], time_limit=1)
    _check(outcome.error, ("TIMEOUT_ERROR", "execution", PART, False))
