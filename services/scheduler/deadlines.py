"""How long a job may stay in each active state before the reaper moves it (docs/SERVICES.md,
"Deadlines").

| state | owner | deadline from the move into it |
|---|---|---|
| ``submitted`` | scheduler (intake) | ``submitted_wait_s`` |
| ``queued`` | an executor (``RunRequested``), or a platform (score-only) | ``queue_wait_s`` |
| ``running`` | the executor holding the lease | ``time_limit`` + ``run_margin_s`` + grace |
| ``scoring`` | a scorer (``ScoreRequested``) | ``scorer.time_limit`` + grace |

The scheduler does not hear when a scorer starts on a request, so the scoring deadline includes
the wait in the scorer's queue: the grace (``deadline_grace_s``, 15 min) must cover its backlog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.config import Settings
from shared.jobs import SUBMITTED_WAIT, JobStatus, now_ms
from shared.models import JobSpec


@dataclass(frozen=True, slots=True)
class Deadlines:
    submitted: timedelta = SUBMITTED_WAIT
    queued: timedelta = timedelta(hours=24)
    run_margin: timedelta = timedelta(seconds=600 + 900)
    scoring: timedelta = timedelta(seconds=600 + 900)
    resends: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> Deadlines:
        section = settings.scheduler
        grace = timedelta(seconds=section.deadline_grace_s)
        return cls(
            submitted=timedelta(seconds=section.submitted_wait_s),
            queued=timedelta(seconds=section.queue_wait_s),
            run_margin=timedelta(seconds=settings.executor_service.run_margin_s) + grace,
            scoring=timedelta(seconds=settings.scorer.time_limit) + grace,
            resends=section.deadline_resends,
        )

    def of(
        self, state: JobStatus, spec: JobSpec, *, now: datetime | None = None
    ) -> datetime | None:
        """The deadline of a job moving into ``state`` now; ``None`` for a finished job."""
        at = now or now_ms()
        match state:
            case JobStatus.SUBMITTED:
                return at + self.submitted
            case JobStatus.QUEUED:
                return at + self.queued
            case JobStatus.RUNNING:
                return at + timedelta(seconds=spec.time_limit) + self.run_margin
            case JobStatus.SCORING:
                return at + self.scoring
            case _:
                return None
