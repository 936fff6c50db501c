"""What a report shows, gathered from a workspace (the CLI, the scorer) or a stored job (the
gateway): the result, the run's outcome, the log tail and the artifacts' bytes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.errors import AutoscorerError, ErrorCode, Fault, validation_error
from shared.files import atomic_write_text
from shared.jobs import Job
from shared.models import Result
from shared.report.files import MAX_JSON_BYTES, read_bounded, read_json_object, read_tail
from shared.report.html import render
from shared.workspace import Workspace

REPORT_NAME = "report.html"
LOG_TAIL_LINES = 40
MAX_RESULT_BYTES = 64 * MAX_JSON_BYTES
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything :func:`shared.report.html.render` needs; ``root`` is the workspace whose
    ``output/`` holds the artifacts (None: artifacts are listed, not shown)."""

    title: str
    result: Result
    facts: dict[str, str] = field(default_factory=dict)
    run: dict[str, Any] | None = None
    log_tail: str | None = None
    root: Path | None = None


def _result_file(ws: Workspace) -> Result:
    """output/result.json, or MISSING_FILE / PARSE_ERROR (the organiser's to fix: score first)."""
    relative = "output/result.json"
    data = read_bounded(ws.root, relative, "output", MAX_RESULT_BYTES)
    if data is None:
        message = f"{relative} is missing (score the workspace first)"
        raise validation_error(
            ErrorCode.MISSING_FILE, message, fault=Fault.ORGANISER, path=relative
        )
    try:
        return Result.model_validate_json(data)
    except ValidationError as exc:
        message = f"{relative} is not a result ({exc.error_count()} problems)"
        raise validation_error(
            ErrorCode.PARSE_ERROR, message, fault=Fault.ORGANISER, path=relative
        ) from exc


def _spec_facts(ws: Workspace) -> dict[str, str]:
    try:
        spec = ws.load_spec()
    except AutoscorerError:
        return {}
    facts = {"job": spec.job_id, "scorer": spec.scorer, "task type": spec.task_type}
    if spec.container is not None:
        facts["image"] = spec.container.image
    return facts


def _log_tail(root: Path) -> str | None:
    return read_tail(root, "logs/container.log", "logs", LOG_TAIL_LINES)


def from_workspace(ws: Workspace, result: Result | None = None) -> ReportData:
    """The report of a workspace: ``result`` or its output/result.json (MISSING_FILE or
    PARSE_ERROR when there is none), logs/run_info.json and logs/container.log."""
    shown = result if result is not None else _result_file(ws)
    facts = _spec_facts(ws)
    return ReportData(
        title=facts.get("job", ws.root.name),
        result=shown,
        facts=facts,
        run=read_json_object(ws.root, "logs/run_info.json", "logs"),
        log_tail=_log_tail(ws.root),
        root=ws.root,
    )


def from_job(job: Job) -> ReportData | None:
    """The report of a stored job (its stored result, or its error); None before either."""
    result = job.result
    if result is None and job.error is not None:
        result = Result(error=job.error)
    if result is None:
        return None
    root = Path(job.workspace)
    local = root.is_dir()
    facts = {
        "job": job.job_id,
        "status": job.status.value,
        "scorer": job.spec.scorer,
        "task type": job.spec.task_type,
        "submitted by": job.submitter,
        "created": job.created_at.isoformat(),
    }
    if job.result is not None:  # the newest; GET /v1/jobs/{id}/results lists every version
        facts["result version"] = str(max(1, len(job.result_versions)))
    run = job.run_outcome.model_dump(mode="json") if job.run_outcome is not None else None
    if run is None and local:
        run = read_json_object(root, "logs/run_info.json", "logs")
    return ReportData(
        title=job.job_id,
        result=result,
        facts=facts,
        run=run,
        log_tail=_log_tail(root) if local else None,
        root=root if local else None,
    )


def write_report(ws: Workspace, result: Result | None = None) -> Path:
    """Render the workspace's report to ``output/report.html`` and return its path."""
    path = ws.output_dir / REPORT_NAME
    atomic_write_text(path, render(from_workspace(ws, result)))
    return path


def write_report_quietly(ws: Workspace, result: Result) -> Path | None:
    """:func:`write_report` after scoring: a report that cannot be written (a full disk, an
    output/ that is not a folder) is logged, never a reason to fail the job it describes."""
    try:
        return write_report(ws, result)
    except (OSError, AutoscorerError) as exc:
        log.warning("could not write %s: %s", ws.output_dir / REPORT_NAME, exc)
        return None
