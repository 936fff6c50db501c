"""The local backend: runs the job's command as a subprocess on this machine.

THIS IS NOT A SANDBOX. The program runs as the calling user, with the network and the whole
file system in reach. It exists for development and for the embedded quickstart. It does keep
the workspace contract: the program's working directory is the participant view (``input/``
without ground truth, ``meta.json``, ``output/`` and the workspace's ``submission/`` code), so a
well-behaved program sees what it would see in a container; the time limit is enforced by
killing the whole process group; stdout/stderr go to ``logs/container.log`` (capped).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import signal
import sys
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from services.executor.base import write_run_info
from services.executor.logcap import CappedLog
from services.executor.outputs import check_outputs, clear_output
from services.executor.registry import BackendType
from shared.errors import AutoscorerError, ErrorCode, execution_error
from shared.limits import SandboxLimits, check_within_caps, output_cap_bytes
from shared.models import JobSpec, RunOutcome
from shared.workspace import Workspace, prepare_participant_view

_BAD_COMMAND = frozenset({errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR})


class LocalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log_cap_bytes: int = Field(10 * 1024 * 1024, gt=0)
    output_cap_bytes: int = Field(1024 * 1024 * 1024, gt=0)
    inherit_env: bool = Field(False, description="pass this process's environment through")
    kill_grace_s: float = Field(2.0, ge=0)
    limits: SandboxLimits = Field(
        default_factory=SandboxLimits,
        description="operator caps (checked before the run) and ulimits (nofile, fsize, core 0)",
    )


def _rlimits(limits: SandboxLimits) -> list[tuple[int, int]]:
    """(resource, value) pairs for the child, each clamped to what this process may grant."""
    wanted = [
        (resource.RLIMIT_NOFILE, limits.nofile),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, limits.fsize_bytes),
    ]
    granted = []
    for which, value in wanted:
        _soft, hard = resource.getrlimit(which)
        granted.append((which, value if hard == resource.RLIM_INFINITY else min(value, hard)))
    return granted


def _apply_rlimits(rlimits: list[tuple[int, int]]) -> Callable[[], None]:
    """The child's preexec: computed in the parent, so the forked child only calls setrlimit."""

    def apply() -> None:
        for which, value in rlimits:
            resource.setrlimit(which, (value, value))

    return apply


def _environment(config: LocalConfig, spec: JobSpec, view: Path) -> dict[str, str]:
    base = dict(os.environ) if config.inherit_env else {}
    interpreter_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join([interpreter_dir, os.environ.get("PATH", "/usr/bin:/bin")])
    base.update(
        PATH=path, HOME=str(view), LANG="C.UTF-8", PYTHONUNBUFFERED="1", AUTOSCORER_WORKSPACE="."
    )
    base.update(spec.container.env if spec.container else {})
    return base


def _link_into_view(ws: Workspace, view: Path) -> None:
    (view / "output").symlink_to(ws.output_dir, target_is_directory=True)
    submission = ws.root / "submission"
    if submission.is_dir():
        (view / "submission").symlink_to(submission, target_is_directory=True)


class LocalExecutor:
    name = "local"

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self._cancelled: set[str] = set()

    async def run(self, spec: JobSpec, ws: Workspace) -> RunOutcome:
        check_within_caps(spec, self.config.limits)
        if spec.container is None or not spec.container.cmd:
            raise execution_error(
                ErrorCode.CONFIG_VALIDATION_ERROR,
                "meta.json has no container.cmd to run",
                workspace=str(ws.root),
            )
        view = await asyncio.to_thread(self._prepare, spec, ws)  # file work, off the loop
        started = datetime.now(UTC)
        log = CappedLog(ws.logs_dir / "container.log", self.config.log_cap_bytes)
        try:
            exit_code, timed_out = await self._execute(spec, view, log)
        finally:
            log.close()
        finished = datetime.now(UTC)
        outcome = RunOutcome(
            job_id=spec.job_id,
            backend=self.name,
            status="succeeded",
            exit_code=exit_code,
            timed_out=timed_out,
            started_at=started,
            finished_at=finished,
            duration_s=(finished - started).total_seconds(),
            log_path="logs/container.log",
            log_truncated=log.truncated,
            extra={"sandbox": False},
        )
        return await asyncio.to_thread(self._finish, spec, ws, outcome, log)

    def _prepare(self, spec: JobSpec, ws: Workspace) -> Path:
        """The participant's view of a clean workspace (runs in a thread)."""
        ws.ensure_dirs()
        clear_output(ws)
        view = prepare_participant_view(ws, spec, self.config.limits)
        _link_into_view(ws, view)
        return view

    def _finish(
        self, spec: JobSpec, ws: Workspace, outcome: RunOutcome, log: CappedLog
    ) -> RunOutcome:
        """Judge the run (walks output/) and record it (runs in a thread)."""
        outcome = self._judge(spec, ws, outcome, log)
        write_run_info(ws, outcome)
        return outcome

    def _judge(
        self, spec: JobSpec, ws: Workspace, outcome: RunOutcome, log: CappedLog
    ) -> RunOutcome:
        error: AutoscorerError | None = None
        if spec.job_id in self._cancelled:
            self._cancelled.discard(spec.job_id)
            error = execution_error(ErrorCode.CANCELLED, "the run was cancelled")
        elif outcome.timed_out:
            error = execution_error(
                ErrorCode.TIMEOUT_ERROR,
                f"the program ran past its time limit of {spec.time_limit}s and was killed",
                time_limit=spec.time_limit,
                log_tail=log.tail_lines(),
            )
        elif outcome.exit_code != 0:
            error = execution_error(
                ErrorCode.CONTAINER_EXIT_NONZERO,
                f"the program exited with code {outcome.exit_code}",
                exit_code=outcome.exit_code,
                log_tail=log.tail_lines(),
            )
        else:
            try:
                cap = output_cap_bytes(self.config.limits, self.config.output_cap_bytes)
                check_outputs(ws, spec.expected_outputs or [], cap)
            except AutoscorerError as exc:
                error = exc
        if error is None:
            return outcome
        error.logs = "logs/container.log"
        status = "cancelled" if error.code is ErrorCode.CANCELLED else "failed"
        return outcome.model_copy(update={"status": status, "error": error.to_info()})

    async def _execute(self, spec: JobSpec, view: Path, log: CappedLog) -> tuple[int | None, bool]:
        assert spec.container is not None
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.container.cmd,
                cwd=view,
                env=_environment(self.config, spec, view),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_apply_rlimits(_rlimits(self.config.limits)),
            )
        except OSError as exc:  # no such program / not executable: the participant's command
            raise execution_error(
                ErrorCode.CONTAINER_FAILED
                if exc.errno in _BAD_COMMAND
                else ErrorCode.CONTAINER_CREATE_FAILED,
                f"cannot start {spec.container.cmd[0][:200]!r}: {exc.strerror}",
                cmd=spec.container.cmd,
            ) from exc
        self._running[spec.job_id] = process
        try:
            return await self._wait(process, spec.time_limit, log)
        finally:
            self._running.pop(spec.job_id, None)

    async def _wait(
        self, process: asyncio.subprocess.Process, time_limit: float, log: CappedLog
    ) -> tuple[int | None, bool]:
        async def pump() -> None:
            assert process.stdout is not None
            while chunk := await process.stdout.read(65536):
                log.write(chunk)

        pumping = asyncio.create_task(pump())
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), timeout=time_limit)
        except TimeoutError:
            timed_out = True
            _kill_group(process.pid)
            await process.wait()
        finally:
            _kill_group(process.pid)  # children left behind by the program
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(pumping, timeout=self.config.kill_grace_s)
            pumping.cancel()
        return process.returncode, timed_out

    async def cancel(self, job_id: str) -> bool:
        process = self._running.get(job_id)
        if process is None:
            return False
        self._cancelled.add(job_id)
        _kill_group(process.pid)
        return True

    async def cleanup_leftovers(self, live_job_ids: Collection[str]) -> int:
        return 0  # processes die with their process group; nothing outlives a run

    async def close(self) -> None:
        for job_id in list(self._running):
            await self.cancel(job_id)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


BACKEND = BackendType(LocalConfig, LocalExecutor)
