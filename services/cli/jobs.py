"""Run, score and pipeline for one workspace on this machine (the embedded default)."""

from __future__ import annotations

import asyncio
import logging
import time

from services.executor.registry import create_executor
from services.scorer.oneshot import score_once
from services.scorer.plugins import plugin_manifest
from services.scorer.pool import ScoreTask
from services.scorer.registry import ScorerRegistry
from shared.config import Settings, backend_config
from shared.files import atomic_write_text
from shared.joblog import arecord
from shared.jobs import with_expected_outputs
from shared.models import Result, RunOutcome
from shared.report import write_report_quietly
from shared.retention import remove_participant_view
from shared.workspace import Workspace


async def run_job(
    settings: Settings, registry: ScorerRegistry, ws: Workspace, backend: str | None
) -> RunOutcome:
    """Run the participant program; the scorer is checked first so a typo fails in seconds."""
    spec = ws.load_spec()
    spec = with_expected_outputs(spec, registry.get(spec.scorer).info.expected_files)
    executor = create_executor(backend_config(settings, backend))
    cap = settings.log.job_log_max_bytes
    await arecord(ws.root, "run_started", spec.job_id, service="cli", cap=cap, backend=backend)
    try:
        outcome = await executor.run(spec, ws)
    finally:
        await executor.close()
        await asyncio.to_thread(remove_participant_view, ws)  # retention: after every run
    await arecord(
        ws.root,
        "run_completed",
        spec.job_id,
        service="cli",
        cap=cap,
        backend=outcome.backend,
        status=outcome.status,
        error_code=outcome.error.code.value if outcome.error else None,
        exit_code=outcome.exit_code,
        duration_s=outcome.duration_s,
    )
    return outcome


def run_failure_result(outcome: RunOutcome) -> Result:
    result = Result(error=outcome.error, timing=_run_timing(outcome))
    result.resources.update(_run_resources(outcome))
    return result


def _run_timing(outcome: RunOutcome) -> dict[str, float]:
    return {"run_s": round(outcome.duration_s, 6)} if outcome.duration_s is not None else {}


def _run_resources(outcome: RunOutcome) -> dict[str, float | int | str]:
    found: dict[str, float | int | str | None] = {
        "backend": outcome.backend,
        "image": outcome.image,
        "image_id": outcome.image_id,
        "peak_memory_bytes": outcome.peak_memory_bytes,
        "cpu_seconds": outcome.cpu_seconds,
        "exit_code": outcome.exit_code,
    }
    return {k: v for k, v in found.items() if v is not None}


async def pipeline(
    settings: Settings, registry: ScorerRegistry, ws: Workspace, backend: str | None
) -> Result:
    """Run then score. A failed run still leaves a ``result.json`` with the run's error."""
    started = time.perf_counter()
    outcome = await run_job(settings, registry, ws, backend)
    if outcome.error is not None:
        result = run_failure_result(outcome)
        atomic_write_text(ws.result_path, result.model_dump_json(indent=2))
        write_report_quietly(ws, result)
        return result
    task = ScoreTask(str(ws.root), None, None, plugin_manifest(registry), write=False)
    log_level = logging.getLogger().getEffectiveLevel()
    cap = settings.log.job_log_max_bytes
    await arecord(ws.root, "scoring_started", outcome.job_id, service="cli", cap=cap)
    result = await asyncio.to_thread(
        score_once, task, settings.scorer.time_limit, log_level=log_level
    )
    await arecord(
        ws.root,
        "scoring_completed",
        outcome.job_id,
        service="cli",
        cap=cap,
        error_code=result.error.code.value if result.error else None,
        timing=dict(result.timing),
        summary=None if result.error else dict(result.summary),
    )
    result.timing.update(_run_timing(outcome))
    result.timing["total_s"] = round(time.perf_counter() - started, 6)
    result.resources.update(_run_resources(outcome))
    if outcome.image_id:
        result.versioning.setdefault("image_id", outcome.image_id)
    atomic_write_text(ws.result_path, result.model_dump_json(indent=2))
    write_report_quietly(ws, result)
    return result
