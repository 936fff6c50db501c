"""/v1/jobs: submit, list, get, result, log tail, cancel, re-score."""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.gateway.auth import PRINCIPAL, Principal
from services.gateway.context import GATEWAY, Gateway
from services.gateway.http import api_error, ok
from services.gateway.uploads import Limits, extract_workspace
from shared.errors import AutoscorerError, ErrorCode
from shared.events import CancelRequested, JobSubmitted, RescoreRequested
from shared.jobs import Job, JobStatus, new_job
from shared.models import JobSpec, new_job_id
from shared.outbox import outbox_entry
from shared.store import ListQuery
from shared.telemetry import current_trace_context
from shared.urls import TargetUrl
from shared.workspace import load_spec

PUBLIC_FIELDS = {"outbox", "processed_event_ids"}
LOG_TAIL_MAX_BYTES = 256 * 1024


class SubmitRequest(BaseModel):
    """A submission naming a workspace under the gateway's data root."""

    model_config = ConfigDict(extra="forbid")

    workspace: str = Field(min_length=1, description="path relative to the data root")
    spec: dict[str, Any] | None = Field(
        None, description="JobSpec; default: the workspace's meta.json"
    )
    priority: int = Field(5, ge=0, le=9)
    callback_url: TargetUrl | None = None  # checked by shared.urls.check_target_url


def public_job(job: Job) -> dict[str, Any]:
    return job.model_dump(mode="json", exclude=PUBLIC_FIELDS)


def _validation(exc: ValidationError, what: str) -> AutoscorerError:
    return api_error(
        ErrorCode.CONFIG_VALIDATION_ERROR,
        f"{what} is invalid",
        errors=exc.errors(include_url=False, include_context=False, include_input=False),
    )


def resolve_workspace(root: Path, relative: str) -> Path:
    """A directory inside ``root``; traversal and links out of it are refused."""
    root = root.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or candidate == root:
        raise api_error(
            ErrorCode.WORKSPACE_INVALID,
            "workspace must be a folder inside the data root",
            workspace=relative,
        )
    if not candidate.is_dir():
        raise api_error(
            ErrorCode.WORKSPACE_INVALID,
            f"workspace {relative!r} does not exist",
            workspace=relative,
        )
    return candidate


def _spec_for(workspace: Path, raw: dict[str, Any] | None) -> JobSpec:
    if raw is None:
        spec = load_spec(workspace / "meta.json")
    else:
        try:
            spec = JobSpec.model_validate(raw)
        except ValidationError as exc:
            raise _validation(exc, "spec") from exc
    return spec.model_copy(update={"job_id": new_job_id()})  # one id per submission


async def _submit(
    gw: Gateway, principal: Principal, request: web.Request, body: SubmitRequest, workspace: Path
) -> web.Response:
    key = request.headers.get("Idempotency-Key")
    scoped_key = f"{principal.subject}:{key}" if key else None  # keys are per submitter
    running = await gw.store.find_active_by_workspace(str(workspace))
    if running is not None and (principal.is_admin or running.submitter == principal.subject):
        return ok(
            {
                "submitted": False,
                "running": True,
                "job_id": running.job_id,
                "job": public_job(running),
            }
        )
    spec = _spec_for(workspace, body.spec)
    event = JobSubmitted(
        job_id=spec.job_id,
        spec=spec,
        workspace=str(workspace),
        submitter=principal.subject,
        priority=body.priority,
        idempotency_key=scoped_key,
        callback_url=body.callback_url,
    )
    job = new_job(
        spec,
        workspace=str(workspace),
        submitter=principal.subject,
        priority=body.priority,
        idempotency_key=scoped_key,
        trace_context=current_trace_context(),  # the job's trace: this request's span
        outbox=[outbox_entry(event)],
    ).model_copy(update={"callback_url": body.callback_url})
    created = await gw.store.create(job)
    if not created.created:
        return ok(
            {
                "submitted": False,
                "existing": True,
                "job_id": created.job.job_id,
                "job": public_job(created.job),
            }
        )
    await gw.publish_outbox(created.job)
    return ok(
        {"submitted": True, "job_id": spec.job_id, "job": public_job(created.job)}, status=202
    )


async def submit_job(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    principal = request[PRINCIPAL]
    if request.content_type.startswith("multipart/"):
        body, workspace = await _receive_upload(gw, request)
    else:
        try:
            body = SubmitRequest.model_validate(await request.json())
        except json.JSONDecodeError as exc:
            raise api_error(ErrorCode.PARSE_ERROR, f"request body is not JSON: {exc}") from exc
        except ValidationError as exc:
            raise _validation(exc, "submission") from exc
        workspace = resolve_workspace(gw.settings.data_root, body.workspace)
    return await _submit(gw, principal, request, body, workspace)


async def _receive_upload(gw: Gateway, request: web.Request) -> tuple[SubmitRequest, Path]:
    """Multipart: an ``archive`` part (tar/tar.gz/zip of a workspace) and optional fields."""
    reader = await request.multipart()
    fields: dict[str, Any] = {}
    uploads = gw.settings.data_root / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    archive: Path | None = None
    with tempfile.TemporaryDirectory(dir=uploads) as tmp:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise api_error(ErrorCode.UPLOAD_REJECTED, "nested multipart is not accepted")
            if part.name == "archive":
                archive = Path(tmp) / "upload"
                await _save_part(part, archive, gw.settings.max_upload_bytes)
            elif part.name in ("spec", "priority", "callback_url"):
                text = await part.text()
                fields[part.name] = json.loads(text) if part.name == "spec" else text
            else:
                raise api_error(ErrorCode.UPLOAD_REJECTED, f"unexpected form field {part.name!r}")
        if archive is None:
            raise api_error(ErrorCode.UPLOAD_REJECTED, "the form has no 'archive' file")
        target = uploads / uuid.uuid4().hex
        limits = Limits(gw.settings.max_upload_files, gw.settings.max_unpacked_bytes)
        await asyncio.to_thread(extract_workspace, archive, target, limits)
    workspace = _single_root(target)
    try:
        body = SubmitRequest.model_validate(
            {"workspace": str(workspace.relative_to(gw.settings.data_root.resolve())), **fields}
        )
    except ValidationError as exc:
        raise _validation(exc, "submission") from exc
    return body, workspace


def _single_root(target: Path) -> Path:
    """The unpacked workspace: the archive's root, or its one top-level folder."""
    target = target.resolve()
    if (target / "meta.json").exists():
        return target
    children = list(target.iterdir())
    if len(children) == 1 and (children[0] / "meta.json").is_file():
        return children[0]
    return target


async def _save_part(part: BodyPartReader, target: Path, limit: int) -> None:
    size = 0
    with target.open("wb") as out:
        while chunk := await part.read_chunk(1 << 20):
            size += len(chunk)
            if size > limit:
                raise api_error(ErrorCode.UPLOAD_REJECTED, f"upload is larger than {limit} bytes")
            out.write(chunk)


def _visible(job: Job | None, principal: Principal, job_id: str) -> Job:
    if job is None or not (principal.is_admin or job.submitter == principal.subject):
        raise api_error(ErrorCode.NOT_FOUND, f"no job {job_id!r}", job_id=job_id)
    return job


async def _job(request: web.Request) -> Job:
    job_id = request.match_info["job_id"]
    job = await request.app[GATEWAY].store.get(job_id)
    return _visible(job, request[PRINCIPAL], job_id)


async def get_job(request: web.Request) -> web.Response:
    return ok(public_job(await _job(request)))


async def get_result(request: web.Request) -> web.Response:
    job = await _job(request)
    if job.result is None:
        raise api_error(
            ErrorCode.NOT_FOUND,
            f"job {job.job_id} has no result yet",
            job_id=job.job_id,
            status=job.status.value,
        )
    return ok(
        {
            "job_id": job.job_id,
            "status": job.status.value,
            "result": job.result.model_dump(mode="json"),
        }
    )


def _tail(path: Path, lines: int) -> tuple[str, bool]:
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - LOG_TAIL_MAX_BYTES))
        data = handle.read().decode("utf-8", errors="replace")
    kept = data.splitlines()[-lines:]
    return "\n".join(kept), size > LOG_TAIL_MAX_BYTES or len(data.splitlines()) > lines


async def get_logs(request: web.Request) -> web.Response:
    job = await _job(request)
    try:
        lines = max(1, min(5000, int(request.query.get("tail", "200"))))
    except ValueError as exc:
        raise api_error(ErrorCode.CONFIG_VALIDATION_ERROR, "tail must be a whole number") from exc
    path = Path(job.workspace) / "logs" / "container.log"
    if not path.is_file():
        raise api_error(ErrorCode.NOT_FOUND, f"job {job.job_id} has no container log yet")
    content, truncated = await asyncio.to_thread(_tail, path, lines)
    return ok(
        {
            "job_id": job.job_id,
            "path": "logs/container.log",
            "content": content,
            "truncated": truncated,
        }
    )


def _list_query(request: web.Request, principal: Principal) -> ListQuery:
    q = request.query
    submitter = q.get("submitter") if principal.is_admin else principal.subject
    raw: dict[str, Any] = {
        "submitter": submitter,
        "scorer": q.get("scorer"),
        "cursor": q.get("cursor"),
        "limit": q.get("limit", "50"),
    }
    if "status" in q:
        raw["status"] = frozenset(q["status"].split(","))
    for name in ("created_from", "created_to"):
        if name in q:
            raw[name] = datetime.fromisoformat(q[name])
    try:
        return ListQuery.model_validate({k: v for k, v in raw.items() if v is not None})
    except (ValidationError, ValueError) as exc:
        raise api_error(ErrorCode.CONFIG_VALIDATION_ERROR, f"bad list query: {exc}") from exc


async def list_jobs(request: web.Request) -> web.Response:
    query = _list_query(request, request[PRINCIPAL])
    page = await request.app[GATEWAY].store.list_jobs(query)
    return ok({"jobs": [public_job(j) for j in page.jobs], "next_cursor": page.next_cursor})


async def cancel_job(request: web.Request) -> web.Response:
    job = await _job(request)
    if not job.active:
        raise api_error(
            ErrorCode.INVALID_STATE,
            f"job {job.job_id} is already {job.status.value}",
            status=job.status.value,
        )
    principal = request[PRINCIPAL]
    await request.app[GATEWAY].bus.publish(
        CancelRequested(job_id=job.job_id, requested_by=principal.subject)
    )
    return ok({"job_id": job.job_id, "cancel_requested": True}, status=202)


async def rescore_job(request: web.Request) -> web.Response:
    job = await _job(request)
    if job.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        raise api_error(
            ErrorCode.INVALID_STATE,
            f"job {job.job_id} is {job.status.value}; only finished jobs can be re-scored",
            status=job.status.value,
        )
    principal = request[PRINCIPAL]
    reason = request.query.get("reason")
    event = RescoreRequested(job_id=job.job_id, requested_by=principal.subject, reason=reason)
    await request.app[GATEWAY].bus.publish(event)
    return ok({"job_id": job.job_id, "rescore_requested": True}, status=202)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/jobs", submit_job),
        web.get("/v1/jobs", list_jobs),
        web.get("/v1/jobs/{job_id}", get_job),
        web.get("/v1/jobs/{job_id}/result", get_result),
        web.get("/v1/jobs/{job_id}/logs", get_logs),
        web.post("/v1/jobs/{job_id}/cancel", cancel_job),
        web.post("/v1/jobs/{job_id}/rescore", rescore_job),
    ]
