"""The Kubernetes executor: one batch/v1 Job per run, on the workspace PVC, under a strict profile.

Life of a run: build the participant view, create the Job (adopting it if a redelivered message
finds it already there), follow its Pod (list-then-watch, re-listing on 410 Gone) until a
verdict, copy the Pod log into ``logs/container.log``, delete the Job, write
``logs/run_info.json``. See docs/EXECUTORS_KUBERNETES.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from services.executor.base import write_run_info
from services.executor.kubernetes.api import KubeApi
from services.executor.kubernetes.client import build_api_client
from services.executor.kubernetes.config import KubernetesConfig
from services.executor.kubernetes.logs import SavedLog, save_container_log
from services.executor.kubernetes.manifest import build_job, gpu_count
from services.executor.kubernetes.names import (
    JOB_ID_ANNOTATION,
    MANAGED_SELECTOR,
    job_name,
    job_selector,
    normalise_image,
    workspace_sub_path,
)
from services.executor.kubernetes.verdict import Watched, await_verdict
from services.executor.outputs import check_outputs, clear_output
from services.executor.registry import BackendType
from shared.errors import AutoscorerError, ErrorCode, Fault, execution_error, validation_error
from shared.limits import SandboxLimits, check_within_caps, output_cap_bytes
from shared.models import ContainerSpec, JobSpec, RunOutcome
from shared.workspace import Workspace, prepare_participant_view

log = logging.getLogger(__name__)

Json = dict[str, Any]


def require_container(spec: JobSpec, config: KubernetesConfig) -> ContainerSpec:
    """The container to run, or the reason this backend will not run it."""
    check_within_caps(spec, config.limits)
    if spec.container is None:
        raise validation_error(
            ErrorCode.CONFIG_VALIDATION_ERROR, "the job has no container to run", job_id=spec.job_id
        )
    if spec.container.network_policy != "none":
        raise validation_error(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            "the kubernetes backend runs participants without network only (network_policy: none)",
            network_policy=spec.container.network_policy,
        )
    if gpu_count(spec) > 0 and not config.allow_gpus:
        raise execution_error(
            ErrorCode.RESOURCE_ERROR,
            "this executor is not allowed to run GPU jobs",
            gpus=gpu_count(spec),
        )
    return spec.container


def prepare_workspace(ws: Workspace, spec: JobSpec, caps: SandboxLimits | None = None) -> None:
    """Blocking: the participant view, and an ``output/`` the non-root participant can write."""
    ws.ensure_dirs()
    clear_output(ws)
    view = prepare_participant_view(ws, spec, caps)
    meta = view / "meta.json"
    if not meta.is_file():  # the spec came from elsewhere: the mount needs a file to bind
        meta.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    os.chmod(ws.output_dir, 0o777)  # noqa: S103 - the pod's uid differs from the worker's


def owned_by(job: Json, job_id: str) -> bool:
    return bool(job.get("metadata", {}).get("annotations", {}).get(JOB_ID_ANNOTATION) == job_id)


def build_outcome(
    spec: JobSpec, image: str, watched: Watched, saved: SavedLog, extra: Json
) -> RunOutcome:
    verdict = watched.verdict
    error = verdict.error
    if error is not None and error.code is ErrorCode.CONTAINER_EXIT_NONZERO and not error.logs:
        error.logs = saved.tail or None
    duration = None
    if verdict.started_at and verdict.finished_at:
        duration = (verdict.finished_at - verdict.started_at).total_seconds()
    return RunOutcome(
        job_id=spec.job_id,
        backend=KubernetesExecutor.name,
        status="succeeded" if error is None else "failed",
        exit_code=verdict.exit_code,
        oom_killed=verdict.oom_killed,
        timed_out=verdict.timed_out,
        started_at=verdict.started_at,
        finished_at=verdict.finished_at,
        duration_s=duration,
        image=image,
        image_id=verdict.image_id,
        log_path=saved.path,
        log_truncated=saved.truncated,
        error=error.to_info() if error else None,
        extra={**extra, "pod": watched.pod_name},
    )


def failed_outcome(spec: JobSpec, error: AutoscorerError, *, cancelled: bool = False) -> RunOutcome:
    image = normalise_image(spec.container.image) if spec.container else None
    return RunOutcome(
        job_id=spec.job_id,
        backend=KubernetesExecutor.name,
        status="cancelled" if cancelled else "failed",
        image=image,
        error=error.to_info(),
    )


async def race_cancel(work: asyncio.Future[Watched], cancelled: asyncio.Event) -> Watched | None:
    """``work``'s result, or None (and ``work`` cancelled) if ``cancelled`` is set first."""
    stop: asyncio.Future[bool] = asyncio.ensure_future(cancelled.wait())
    both: set[asyncio.Future[Any]] = {work, stop}
    try:
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
        await asyncio.wait(both)
    return None if work.cancelled() else work.result()


class KubernetesExecutor:
    """Runs each job as a Kubernetes Job; see the module docstring."""

    name = "kubernetes"

    def __init__(self, config: KubernetesConfig) -> None:
        self._config = config
        self._api: KubeApi | None = None
        self._api_client: Any = None
        self._api_lock = asyncio.Lock()
        self._cancels: dict[str, asyncio.Event] = {}

    async def _kube(self) -> KubeApi:
        async with self._api_lock:
            if self._api is None:
                self._api_client = await build_api_client(self._config)
                self._api = KubeApi(
                    self._api_client, self._config.namespace, self._config.request_timeout_s
                )
            return self._api

    async def run(self, spec: JobSpec, ws: Workspace) -> RunOutcome:
        if spec.job_id in self._cancels:
            raise execution_error(ErrorCode.EXEC_ERROR, f"job {spec.job_id} is already running")
        cancelled = self._cancels[spec.job_id] = asyncio.Event()
        try:
            return await self._run_boundary(spec, ws, cancelled)
        finally:
            self._cancels.pop(spec.job_id, None)

    async def _run_boundary(
        self, spec: JobSpec, ws: Workspace, cancelled: asyncio.Event
    ) -> RunOutcome:
        """The one place errors are caught: put in run_info, platform ones raised."""
        try:
            outcome = await self._run(spec, ws, cancelled)
        except AutoscorerError as exc:
            outcome = failed_outcome(spec, exc)
            await asyncio.to_thread(write_run_info, ws, outcome)
            if exc.fault is Fault.PLATFORM:
                raise
            return outcome
        await asyncio.to_thread(write_run_info, ws, outcome)
        return outcome

    async def _run(self, spec: JobSpec, ws: Workspace, cancelled: asyncio.Event) -> RunOutcome:
        container = require_container(spec, self._config)
        sub_path = workspace_sub_path(
            str(ws.root), self._config.workspace_root, self._config.pvc_sub_path
        )
        api = await self._kube()
        name = job_name(spec.job_id)
        # outside the try: a Job of that name that is not this job's is not ours to delete
        await self._start(api, spec, ws, build_job(spec, container, self._config, sub_path))
        try:
            return await self._follow(api, spec, ws, name, cancelled)
        finally:
            await self._delete_quietly(api, name)

    async def _start(self, api: KubeApi, spec: JobSpec, ws: Workspace, manifest: Json) -> None:
        """Create the Job, or adopt the one an earlier delivery of this job already started.

        An adopted Job keeps its workspace as it is: its program may have written output already.
        """
        name = manifest["metadata"]["name"]
        if await self._adopt(api, name, spec.job_id):
            return
        await asyncio.to_thread(prepare_workspace, ws, spec, self._config.limits)
        if await api.create_job(manifest) is None and not await self._adopt(api, name, spec.job_id):
            raise execution_error(
                ErrorCode.CONTAINER_CREATE_FAILED,
                f"Job {name} existed at create but is gone",
                job_name=name,
            )

    async def _adopt(self, api: KubeApi, name: str, job_id: str) -> bool:
        existing = await api.read_job(name)
        if existing is None:
            return False
        if not owned_by(existing, job_id):
            raise execution_error(
                ErrorCode.CONTAINER_CREATE_FAILED,
                f"Job {name} exists but is not this job's",
                job_name=name,
            )
        log.info("adopting the existing Job %s for %s (a redelivered run)", name, job_id)
        return True

    async def _follow(
        self, api: KubeApi, spec: JobSpec, ws: Workspace, name: str, cancelled: asyncio.Event
    ) -> RunOutcome:
        config = self._config
        work = asyncio.ensure_future(
            await_verdict(
                api,
                job_name=name,
                selector=job_selector(spec.job_id),
                time_limit=spec.time_limit,
                watch_timeout_s=config.watch_timeout_s,
                grace_s=config.deadline_grace_s,
            )
        )
        watched = await race_cancel(work, cancelled)
        if watched is None:
            error = execution_error(ErrorCode.CANCELLED, "the job was cancelled", job_name=name)
            return failed_outcome(spec, error, cancelled=True)
        if watched.verdict.error is None:
            watched = await self._check_outputs(spec, ws, watched)
        saved = await save_container_log(api, ws, watched.pod_name, config.log_cap_bytes)
        image = normalise_image(spec.container.image) if spec.container else ""
        extra = {"namespace": config.namespace, "job_name": name}
        return build_outcome(spec, image, watched, saved, extra)

    async def _check_outputs(self, spec: JobSpec, ws: Workspace, watched: Watched) -> Watched:
        """A clean exit still fails when output/ is over the cap or lacks an expected file."""
        try:
            cap = output_cap_bytes(self._config.limits, self._config.output_cap_bytes)
            await asyncio.to_thread(check_outputs, ws, spec.expected_outputs or [], cap)
        except AutoscorerError as exc:
            return Watched(replace(watched.verdict, error=exc), watched.pod)
        return watched

    async def _delete_quietly(self, api: KubeApi, name: str) -> None:
        """Delete the Job; a failure here must not hide the run's outcome (the TTL reaps it)."""
        try:
            await api.delete_job(name, self._config.delete_propagation)
        except AutoscorerError as exc:
            log.warning("could not delete Job %s, its TTL will: %s", name, exc.message)

    async def cancel(self, job_id: str) -> bool:
        event = self._cancels.get(job_id)
        if event is not None:
            event.set()
        api = await self._kube()
        deleted = await api.delete_job(job_name(job_id), self._config.delete_propagation)
        return deleted or event is not None

    async def cleanup_leftovers(self, live_job_ids: Collection[str]) -> int:
        api = await self._kube()
        count = 0
        for job in await api.list_jobs(MANAGED_SELECTOR):
            job_id = job.get("metadata", {}).get("annotations", {}).get(JOB_ID_ANNOTATION)
            if job_id in live_job_ids or job_id in self._cancels:
                continue
            if await api.delete_job(job["metadata"]["name"], self._config.delete_propagation):
                count += 1
        return count

    async def close(self) -> None:
        async with self._api_lock:
            if self._api_client is not None:
                await self._api_client.close()
            self._api_client = None
            self._api = None


BACKEND = BackendType(KubernetesConfig, KubernetesExecutor)

__all__ = ["BACKEND", "KubernetesConfig", "KubernetesExecutor"]
