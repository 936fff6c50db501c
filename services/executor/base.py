"""The executor seam: one small protocol every backend implements."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from shared.files import atomic_write_text
from shared.models import JobSpec, RunOutcome
from shared.workspace import Workspace


class Executor(Protocol):
    """Runs one job's participant program in its workspace.

    ``run`` never raises for a participant failure: it returns a ``RunOutcome`` whose ``error``
    carries the standard code (TIMEOUT_ERROR, CONTAINER_OOM, ...). It raises ``AutoscorerError``
    only for platform failures it cannot attribute to the job (engine unreachable, ...).
    """

    name: str

    async def run(self, spec: JobSpec, ws: Workspace) -> RunOutcome: ...

    async def cancel(self, job_id: str) -> bool:
        """Stop a running job; True when something was running."""
        ...

    async def cleanup_leftovers(self, live_job_ids: Collection[str]) -> int:
        """Remove containers/jobs this backend started for jobs no longer alive; return count."""
        ...

    async def close(self) -> None: ...


def write_run_info(ws: Workspace, outcome: RunOutcome) -> None:
    ws.logs_dir.mkdir(exist_ok=True)
    atomic_write_text(ws.logs_dir / "run_info.json", outcome.model_dump_json(indent=2))
