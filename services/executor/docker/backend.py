"""The Docker executor: one participant container per job, locked down, through aiodocker.

``run`` resolves the image (pull policy, offline archive, allow-list), builds the participant
view and a size-capped output tmpfs, creates a sandboxed container labelled with the job id,
follows its log into ``logs/container.log`` while it runs, enforces the time limit, classifies
the end (outcome.py), copies the output into the workspace, and removes the container in
every outcome. ``cancel`` kills a running job; ``cleanup_leftovers`` removes labelled containers
that no live job owns (after an executor crash). See docs/EXECUTORS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer

from services.executor.base import write_run_info
from services.executor.docker.config import DockerConfig
from services.executor.docker.images import ResolvedImage, ensure_image
from services.executor.docker.logs import LogFollower, tail
from services.executor.docker.outcome import (
    Observed,
    classify,
    missing_outputs,
    output_missing_error,
)
from services.executor.docker.output import (
    collect,
    empty_dir,
    mount_output,
    unmount_output,
    usage,
)
from services.executor.docker.sandbox import (
    EXECUTOR_NAME,
    LABEL_JOB,
    LABEL_OUTPUT_MOUNT,
    SandboxPaths,
    check_policy,
    container_name,
    create_body,
    own_labels,
)
from services.executor.docker.stats import StatsSampler
from services.executor.registry import BackendType
from shared.errors import AutoscorerError, ErrorCode, Fault, execution_error
from shared.files import atomic_write_text
from shared.limits import check_within_caps, output_cap_bytes
from shared.models import JobSpec, RunOutcome, parse_memory, utcnow
from shared.workspace import Workspace, prepare_participant_view

OUTPUT_MOUNT_DIR = "docker-output"
_START_HINTS = ("executable file not found", "no such file", "permission denied")
_LOG_DRAIN_S = 10.0  # how long the log stream may lag behind the container's exit


@dataclass(slots=True)
class _Job:
    """One running job, as ``cancel`` sees it."""

    container: DockerContainer | None = None
    cancelled: bool = False


@dataclass(slots=True)
class _Attempt:
    """One run of one job: its inputs and what the container run observed."""

    spec: JobSpec
    ws: Workspace
    job: _Job
    expected: list[str]
    base: RunOutcome
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    image_s: float | None = None  # making the image present (pull, load or nothing)
    timed_out: bool = False
    inspect: dict[str, Any] = field(default_factory=dict)
    log: LogFollower | None = None
    stats: StatsSampler | None = None

    @property
    def log_path(self) -> Path:
        return self.ws.logs_dir / "container.log"


class DockerExecutor:
    name = EXECUTOR_NAME

    def __init__(self, config: DockerConfig) -> None:
        self._config = config
        self._docker: aiodocker.Docker | None = None  # built on first use, inside the event loop
        self._jobs: dict[str, _Job] = {}

    # -- the Executor protocol ---------------------------------------------------------------

    async def run(
        self, spec: JobSpec, ws: Workspace, *, expected_outputs: Sequence[str] | None = None
    ) -> RunOutcome:
        """Run the job's container; ``expected_outputs`` overrides ``spec.expected_outputs``."""
        if spec.job_id in self._jobs:
            raise execution_error(ErrorCode.EXEC_ERROR, f"job {spec.job_id} is already running")
        job = self._jobs[spec.job_id] = _Job()
        if expected_outputs is None:
            expected_outputs = spec.expected_outputs or []
        base = RunOutcome(
            job_id=spec.job_id,
            backend=self.name,
            status="failed",
            image=spec.container.image if spec.container else None,
        )
        try:
            return await self._run_boundary(_Attempt(spec, ws, job, list(expected_outputs), base))
        finally:
            del self._jobs[spec.job_id]

    async def cancel(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None:
            return False
        job.cancelled = True
        if job.container is not None:
            with contextlib.suppress(aiodocker.DockerError):
                await job.container.kill()
        return True

    async def cleanup_leftovers(self, live_job_ids: Collection[str]) -> int:
        docker = self._client()
        filters = {"label": [f"{k}={v}" for k, v in own_labels(self._config).items()]}
        removed = 0
        for item in await docker.containers.list(all=True, filters=filters):
            labels: dict[str, str] = item["Labels"] or {}
            job_id = labels.get(LABEL_JOB, "")
            if job_id in live_job_ids or job_id in self._jobs:
                continue
            await _remove(item)
            await _unmount_labelled(labels.get(LABEL_OUTPUT_MOUNT))
            removed += 1
        return removed

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    # -- one run -----------------------------------------------------------------------------

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            timeout = aiohttp.ClientTimeout(total=self._config.api_timeout_s)
            self._docker = aiodocker.Docker(url=self._config.docker_host, timeout=timeout)
        return self._docker

    async def _run_boundary(self, at: _Attempt) -> RunOutcome:
        """The one place errors are caught: classified, put in run_info, platform ones raised."""
        await asyncio.to_thread(at.ws.ensure_dirs)
        try:
            outcome = await self._execute(at)
        except aiodocker.DockerError as exc:
            error = _engine_error(exc)
            await _record(at.ws, at.base.model_copy(update={"error": error.to_info()}))
            raise error from exc
        except AutoscorerError as exc:
            failed = at.base.model_copy(update={"error": exc.to_info(), "finished_at": utcnow()})
            await _record(at.ws, failed)
            if exc.fault is Fault.PLATFORM:
                raise
            return failed
        await _record(at.ws, outcome)
        return outcome

    async def _execute(self, at: _Attempt) -> RunOutcome:
        container = at.spec.container
        if container is None:
            message = "the job has no container section"
            raise execution_error(ErrorCode.CONFIG_VALIDATION_ERROR, message)
        check_within_caps(at.spec, self._config.limits)
        check_policy(at.spec, self._config)
        started = time.perf_counter()
        image = await ensure_image(self._client(), container.image, self._config, at.ws.root)
        at.image_s = round(time.perf_counter() - started, 3)
        view = await asyncio.to_thread(_participant_view, at.ws, at.spec, self._config)
        await asyncio.to_thread(empty_dir, at.ws.output_dir)  # no stale file passes as output
        output = at.ws.private_dir / OUTPUT_MOUNT_DIR
        paths = SandboxPaths(view / "input", view / "meta.json", output)
        uid, gid = self._config.uid_gid
        await mount_output(
            output,
            limit=self._output_limit,
            uid=uid,
            gid=gid,
            max_files=self._config.output_max_files,
        )
        try:
            return await self._contain(at, image, paths)
        finally:
            await unmount_output(output)

    @property
    def _output_limit(self) -> int:
        return output_cap_bytes(self._config.limits, parse_memory(self._config.output_limit))

    async def _contain(self, at: _Attempt, image: ResolvedImage, paths: SandboxPaths) -> RunOutcome:
        body = create_body(at.spec, self._config, image.image_id, paths)
        container = await self._create(body, container_name(at.spec.job_id))
        at.job.container = container
        try:
            await self._start_and_wait(at, container)
            return await self._conclude(at, image, paths)
        finally:
            await _remove(container)

    async def _create(self, body: dict[str, Any], name: str) -> DockerContainer:
        docker = self._client()
        try:
            return await docker.containers.create(body, name=name)
        except aiodocker.DockerError as exc:
            if exc.status != 409:  # 409: a leftover of an earlier attempt holds the name
                raise _create_error(exc) from exc
        await _remove(docker.containers.container(name))
        try:
            return await docker.containers.create(body, name=name)
        except aiodocker.DockerError as exc:
            raise _create_error(exc) from exc

    async def _start_and_wait(self, at: _Attempt, container: DockerContainer) -> None:
        limit = parse_memory(self._config.log_limit)
        at.log = LogFollower(self._client(), container, at.log_path, limit)
        at.stats = StatsSampler(self._client(), container)
        if at.job.cancelled:  # cancelled before it started: nothing ran, nothing to log
            await asyncio.to_thread(at.log_path.write_bytes, b"")
            return
        at.started_at, clock = utcnow(), time.monotonic()
        try:
            await container.start()
        except aiodocker.DockerError as exc:
            raise _start_error(exc) from exc
        if at.job.cancelled:  # cancel() came while start was in flight: its kill found nothing
            with contextlib.suppress(aiodocker.DockerError):
                await container.kill()
        tasks = [asyncio.create_task(at.log.run(), name=f"logs-{at.spec.job_id}")]
        if self._config.collect_stats:
            tasks.append(asyncio.create_task(at.stats.run(), name=f"stats-{at.spec.job_id}"))
        try:
            at.timed_out = not await _wait(container, _time_limit(at.spec, self._config))
            at.finished_at, at.duration_s = utcnow(), round(time.monotonic() - clock, 3)
            await asyncio.wait(tasks[:1], timeout=_LOG_DRAIN_S)  # it ends with the container
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        at.inspect = await container.show()

    async def _observe(self, at: _Attempt, paths: SandboxPaths) -> Observed:
        state = at.inspect.get("State") or {}
        pids_peak = at.stats.pids_peak if at.stats else None
        return Observed(
            exit_code=state.get("ExitCode") if at.started_at else None,
            oom_killed=bool(state.get("OOMKilled")),
            timed_out=at.timed_out,
            cancelled=at.job.cancelled,
            time_limit_s=_time_limit(at.spec, self._config),
            output=await asyncio.to_thread(usage, paths.output_dir, self._output_limit),
            output_limit=self._output_limit,
            log_tail=await asyncio.to_thread(tail, at.log_path),
            pids_at_limit=(pids_peak or 0) >= self._config.pids_limit - 1,
        )

    async def _conclude(
        self, at: _Attempt, image: ResolvedImage, paths: SandboxPaths
    ) -> RunOutcome:
        seen = await self._observe(at, paths)
        error = classify(seen)
        skipped: list[str] = []
        if error is None or error.code is not ErrorCode.OUTPUT_TOO_LARGE:
            skipped = await asyncio.to_thread(collect, paths.output_dir, at.ws.output_dir)
        if error is None:
            missing = await asyncio.to_thread(missing_outputs, at.ws.output_dir, at.expected)
            error = output_missing_error(missing) if missing else None
        if error is not None:
            text = json.dumps(_redacted(at.inspect, self._config.env), indent=2)
            await asyncio.to_thread(atomic_write_text, at.ws.logs_dir / "inspect.json", text)
        status = "succeeded" if error is None else ("cancelled" if at.job.cancelled else "failed")
        state = at.inspect.get("State") or {}
        return at.base.model_copy(
            update={
                "status": status,
                "exit_code": seen.exit_code,
                "oom_killed": seen.oom_killed,
                "timed_out": at.timed_out,
                "started_at": at.started_at,
                "finished_at": at.finished_at,
                "duration_s": at.duration_s,
                "image": image.reference,
                "image_id": image.image_id,
                "peak_memory_bytes": at.stats.peak_memory_bytes if at.stats else None,
                "cpu_seconds": at.stats.cpu_seconds if at.stats else None,
                "log_path": at.log_path.relative_to(at.ws.root).as_posix(),
                "log_truncated": bool(at.log and at.log.truncated),
                "error": error.to_info() if error else None,
                "extra": {
                    "image_digest": image.digest,
                    "image_pull_s": at.image_s,
                    "container_id": at.inspect.get("Id"),
                    "engine_started_at": state.get("StartedAt"),
                    "engine_finished_at": state.get("FinishedAt"),
                    "output_bytes": seen.output.bytes_used if seen.output else None,
                    "output_skipped": skipped,
                    "log_bytes": at.log.written if at.log else 0,
                },
            }
        )


def _participant_view(ws: Workspace, spec: JobSpec, config: DockerConfig) -> Path:
    view = prepare_participant_view(ws, spec, config.limits)
    meta = view / "meta.json"
    if not meta.is_file():  # the spec came from elsewhere: show the participant what it is running
        meta.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    return view


def _redacted(inspect: dict[str, Any], operator_env: dict[str, str]) -> dict[str, Any]:
    """The inspect document with the operator's env values masked (participants may read logs/)."""
    config = dict(inspect.get("Config") or {})
    masked = []
    for entry in config.get("Env") or []:
        key = str(entry).split("=", 1)[0]
        masked.append(f"{key}=***" if key in operator_env else entry)
    config["Env"] = masked
    return {**inspect, "Config": config}


def _time_limit(spec: JobSpec, config: DockerConfig) -> int:
    if config.max_time_limit_s is None:
        return spec.time_limit
    return min(spec.time_limit, config.max_time_limit_s)


async def _wait(container: DockerContainer, limit_s: int) -> bool:
    """Wait for the container to end; on the time limit kill it. True when it ended by itself."""
    try:
        async with asyncio.timeout(limit_s):
            await container.wait()
    except TimeoutError:
        with contextlib.suppress(aiodocker.DockerError):
            await container.kill()
        await _wait_ended(container)
        return False
    except aiodocker.DockerError as exc:
        raise _wait_error(exc) from exc
    return True


async def _wait_ended(container: DockerContainer) -> None:
    try:
        await container.wait()
    except aiodocker.DockerError as exc:
        raise _wait_error(exc) from exc


def _wait_error(exc: aiodocker.DockerError) -> AutoscorerError:
    message = f"waiting for the container failed: {exc.message}"
    return execution_error(ErrorCode.CONTAINER_WAIT_FAILED, message, status=exc.status)


async def _remove(container: DockerContainer) -> None:
    """Force-remove; shielded so a cancelled caller still leaves no container behind."""
    task = asyncio.ensure_future(_delete(container))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _delete(container: DockerContainer) -> None:
    try:
        await container.delete(force=True, v=True)
    except aiodocker.DockerError as exc:
        if exc.status not in (404, 409):  # gone already, or removal already in progress
            raise


async def _unmount_labelled(path: str | None) -> None:
    if path and Path(path).name == OUTPUT_MOUNT_DIR:
        await unmount_output(Path(path))


async def _record(ws: Workspace, outcome: RunOutcome) -> None:
    await asyncio.to_thread(write_run_info, ws, outcome)


def _engine_error(exc: aiodocker.DockerError) -> AutoscorerError:
    if exc.status == 900:  # aiodocker's "cannot connect"
        return execution_error(ErrorCode.BACKEND_UNAVAILABLE, str(exc.message))
    message = f"Docker engine error: {exc.message}"
    return execution_error(ErrorCode.EXEC_ERROR, message, status=exc.status)


def _create_error(exc: aiodocker.DockerError) -> AutoscorerError:
    text = str(exc.message).lower()
    if "device driver" in text or "gpu" in text:
        message = f"the engine cannot provide GPUs: {exc.message}"
        return execution_error(ErrorCode.RESOURCE_ERROR, message)
    if exc.status == 900:
        return _engine_error(exc)
    if "no command specified" in text:  # the participant's image has no CMD and none was given
        message = f"the program could not start: {exc.message}"
        return execution_error(ErrorCode.CONTAINER_FAILED, message)
    message = f"creating the container failed: {exc.message}"
    return execution_error(ErrorCode.CONTAINER_CREATE_FAILED, message)


def _start_error(exc: aiodocker.DockerError) -> AutoscorerError:
    text = str(exc.message).lower()
    if any(hint in text for hint in _START_HINTS):
        message = f"the program could not start: {exc.message}"
        return execution_error(ErrorCode.CONTAINER_FAILED, message)
    return _create_error(exc)


BACKEND = BackendType(DockerConfig, DockerExecutor)
