"""Helpers for the scheduler tests: settings, a submission, and the rig the fixtures build."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.scheduler.service import Scheduler
from shared.bus import EventBus
from shared.config import ExecutorServiceSettings, SchedulerSettings, ScorerSettings, Settings
from shared.events import JobSubmitted
from shared.jobs import Job, JobStatus
from shared.models import ContainerSpec, JobSpec
from shared.store import JobStore
from tests.scheduler.fakes import FakeExecutor, FakeScorer, Observer

FAST = {
    "lease_check_interval_s": 0.05,
    "relay_interval_s": 0.1,
    "max_attempts": 3,
    "lease_ttl_s": 30.0,
}


def scheduler_settings(**overrides: object) -> Settings:
    section = SchedulerSettings.model_validate({**FAST, **overrides})
    return Settings(scheduler=section)


def reaper_settings(**overrides: object) -> Settings:
    """Deadlines of a fraction of a second (and a reaper looking every 50 ms), one re-send."""
    section = SchedulerSettings.model_validate(
        {
            **FAST,
            "reaper_interval_s": 0.05,
            "deadline_grace_s": 0.0,
            "deadline_resends": 1,
            "submitted_wait_s": 0.3,
            "queue_wait_s": 0.4,
            **overrides,
        }
    )
    return Settings(
        scheduler=section,
        scorer=ScorerSettings(time_limit=0.4),
        executor_service=ExecutorServiceSettings(run_margin_s=0.2),
    )


def submitted(job_id: str, *, container: bool = True, priority: int = 5) -> JobSubmitted:
    spec = JobSpec(
        job_id=job_id,
        scorer="classification",
        container=ContainerSpec(image="participant:latest") if container else None,
    )
    return JobSubmitted(
        job_id=job_id,
        spec=spec,
        workspace=f"/ws/{job_id}",
        submitter="alice",
        priority=priority,
    )


@dataclass
class Rig:
    bus: EventBus
    store: JobStore
    scheduler: Scheduler
    executor: FakeExecutor
    scorer: FakeScorer
    observer: Observer

    async def job(self, job_id: str) -> Job:
        job = await self.store.get(job_id)
        assert job is not None
        return job

    async def wait_status(self, job_id: str, status: JobStatus, timeout: float = 10.0) -> Job:
        found: list[Job] = []

        async def check() -> bool:
            job = await self.store.get(job_id)
            found[:] = [job] if job else []
            return job is not None and job.status is status

        await eventually_async(check, timeout)
        return found[0]


async def eventually_async(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)
