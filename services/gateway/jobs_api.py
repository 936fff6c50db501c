"""/v1/jobs: submit, list, get, result, log tail, cancel, re-score.

Tenancy (docs/API.md, "Who may submit what"): a workspace has at most one active job, whoever
asks and on whichever gateway replica (claimed in the store: ``JobStore.claim_workspace``); a
second submission returns that job to whoever may see it and 409 ``INVALID_STATE`` to anyone
else. By path, an admin may name any folder under the data root, a submitter only folders
under ``<data_root>/<subject>/``; the gateway's own folders (``uploads/``, ``scorers/``) are never
submittable by path. An ``Idempotency-Key`` replay with the same request returns the first job;
with a different request it is 422 ``IDEMPOTENCY_KEY_REUSED``.

Operator caps (``Settings.limits``, CONVENTIONS item 15): a spec (submitted, or the workspace's
meta.json) asking for more memory, CPU, ``/dev/shm``, time or GPUs than they allow is 422
``RESOURCE_LIMIT_EXCEEDED`` at submission; no job is recorded and an upload is removed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.gateway.auth import PRINCIPAL, Principal
from services.gateway.bodies import json_body, validate, validation_error
from services.gateway.context import GATEWAY, Gateway
from services.gateway.forms import read_form
from services.gateway.http import HttpError, api_error, ok, shown
from services.gateway.queue_api import queue_position
from services.gateway.uploads import Limits, extract_workspace
from shared.errors import AutoscorerError, ErrorCode
from shared.events import CancelRequested, JobSubmitted, RescoreRequested
from shared.joblog import arecord
from shared.jobs import Job, JobStatus, job_from_submitted, with_expected_outputs
from shared.limits import check_within_caps
from shared.models import JobSpec, Result, new_job_id
from shared.outbox import outbox_entry
from shared.store import ListQuery
from shared.telemetry import current_trace_context
from shared.urls import TargetUrl
from shared.workspace import check_path, load_spec

log = logging.getLogger(__name__)

PUBLIC_FIELDS = {"outbox", "processed_event_ids", "request_digest", "result_versions"}
"""left out of the job view (result_versions: GET /v1/jobs/{id}/results lists them)"""
LOG_TAIL_MAX_BYTES = 256 * 1024
RESERVED_FOLDERS = frozenset({"uploads", "scorers"})
MAX_WORKSPACE = 1024
MAX_QUERY_VALUE = 512
MAX_REASON = 1024
MAX_JOB_ID = 128
MAX_IDEMPOTENCY_KEY = 200
HOLDER_WAIT_TRIES, HOLDER_WAIT_S = 40, 0.05


class SubmitFields(BaseModel):
    """What a submission may say besides its workspace."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] | None = Field(
        None, description="JobSpec; default: the workspace's meta.json"
    )
    priority: int = Field(5, ge=0, le=9)
    callback_url: TargetUrl | None = None  # checked by shared.urls.check_target_url


class SubmitRequest(SubmitFields):
    """A submission naming a workspace under the gateway's data root."""

    workspace: str = Field(
        min_length=1, max_length=MAX_WORKSPACE, description="path relative to the data root"
    )


def public_job(job: Job) -> dict[str, Any]:
    return job.model_dump(mode="json", exclude=PUBLIC_FIELDS)


def _invalid_workspace(message: str, relative: str) -> AutoscorerError:
    return api_error(ErrorCode.WORKSPACE_INVALID, message, workspace=shown(relative))


def resolve_workspace(root: Path, relative: str) -> Path:
    """A folder inside ``root`` (it may not exist yet); traversal and links out are refused."""
    check_path(relative)  # NUL, unencodable, over-long: WORKSPACE_INVALID
    root = root.resolve()
    try:
        candidate = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, an unreadable folder
        raise _invalid_workspace("the workspace path cannot be resolved", relative) from exc
    if not candidate.is_relative_to(root) or candidate == root:
        raise _invalid_workspace("workspace must be a folder inside the data root", relative)
    return candidate


def existing_workspace(root: Path, relative: str) -> Path:
    candidate = resolve_workspace(root, relative)
    if not candidate.is_dir():
        raise _invalid_workspace(f"workspace {shown(relative)} does not exist", relative)
    return candidate


def check_path_rights(principal: Principal, root: Path, workspace: Path, relative: str) -> None:
    """Who may name which folder by path (before saying whether it exists)."""
    top = workspace.relative_to(root.resolve()).parts[0]
    if top in RESERVED_FOLDERS:
        raise api_error(
            ErrorCode.FORBIDDEN,
            f"folders under {top}/ cannot be submitted by path",
            workspace=shown(relative),
        )
    if not principal.is_admin and top != principal.subject:
        raise api_error(
            ErrorCode.FORBIDDEN,
            "a submitter may submit by path only folders under its own folder "
            f"{shown(principal.subject)}/; upload the workspace instead",
            workspace=shown(relative),
        )


def _spec_for(gw: Gateway, workspace: Path, raw: dict[str, Any] | None) -> JobSpec:
    """The submitted spec (or the workspace's meta.json), within the operator's caps, with the
    outputs its scorer expects when the spec names none (data for the executor, which knows no
    scorer; an unknown scorer leaves them unset and is refused later by the scorer)."""
    spec = load_spec(workspace / "meta.json") if raw is None else validate(JobSpec, raw, "spec")
    check_within_caps(spec, gw.limits)  # RESOURCE_LIMIT_EXCEEDED (422): refused before stored
    refuse_unloaded_pin(gw, spec.scorer)
    with contextlib.suppress(AutoscorerError):
        spec = with_expected_outputs(spec, gw.scorers.get(spec.scorer).expected_files)
    return spec.model_copy(update={"job_id": new_job_id()})  # one id per submission


def refuse_unloaded_pin(gw: Gateway, ref: str) -> None:
    """422 SCORER_NOT_FOUND for a spec pinning a version (``name@1.0.0``) of a scorer the scorer
    service announced at another version; a scorer it does not know is left to the scorer."""
    try:
        gw.scorers.get(ref)
    except AutoscorerError as exc:
        if "loaded_version" in exc.details:
            raise HttpError(422, exc.code, exc.message, **exc.details) from exc


def _idempotency_key(request: web.Request, principal: Principal) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not (key.isascii() and key.isprintable()):
        raise api_error(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
        )
    return f"{principal.subject}:{key}"  # keys are per submitter


def _visible_to(job: Job, principal: Principal) -> bool:
    return principal.is_admin or job.submitter == principal.subject


def _replay(existing: Job, digest: str) -> web.Response:
    """The answer to a repeated Idempotency-Key: the same job, or 422 for another request."""
    if existing.request_digest is not None and existing.request_digest != digest:
        raise HttpError(
            422,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was used for a different request; use a new key",
        )
    return ok(
        {
            "submitted": False,
            "existing": True,
            "job_id": existing.job_id,
            "job": public_job(existing),
        }
    )


def _busy(running: Job, principal: Principal, key: str | None, digest: str) -> web.Response:
    if key is not None and running.idempotency_key == key:
        return _replay(running, digest)
    if not _visible_to(running, principal):
        raise api_error(
            ErrorCode.INVALID_STATE,
            "this workspace already has an active job; one job per workspace at a time",
        )
    return ok(
        {"submitted": False, "running": True, "job_id": running.job_id, "job": public_job(running)}
    )


def _new_job(
    gw: Gateway,
    principal: Principal,
    body: SubmitFields,
    workspace: Path,
    *,
    key: str | None,
    digest: str,
) -> Job:
    spec = _spec_for(gw, workspace, body.spec)
    event = JobSubmitted(
        job_id=spec.job_id,
        spec=spec,
        workspace=str(workspace),
        submitter=principal.subject,
        priority=body.priority,
        idempotency_key=key,
        callback_url=body.callback_url,
    )
    return job_from_submitted(
        event,
        trace_context=current_trace_context(),  # the job's trace: this request's span
        outbox=[outbox_entry(event)],
        request_digest=digest,
    )


async def _admit(
    gw: Gateway, request: web.Request, body: SubmitFields, workspace: Path, digest: str
) -> Job | web.Response:
    """The new job, stored; or the answer when an existing job answers for it."""
    principal = request[PRINCIPAL]
    key = _idempotency_key(request, principal)
    job = await asyncio.to_thread(_new_job, gw, principal, body, workspace, key=key, digest=digest)
    # the store's claim makes it one job per workspace across replicas; the local lock only
    # spares this replica's own racing requests the wait for a claimed job to appear
    async with gw.workspace_locks.hold(job.workspace):
        holder = await gw.store.claim_workspace(job.workspace, job.job_id)
        if holder != job.job_id:
            return _busy(await _holder(gw, holder), principal, key, digest)
        created = await gw.store.create(job)
    if created.created:
        await _journal_submitted(created.job, principal.subject)
        return created.job
    await gw.store.release_workspace(job.workspace, job.job_id)  # an earlier job answers
    return _replay(created.job, digest)


async def _journal_submitted(job: Job, subject: str) -> None:
    """The job's first line: ``job <id> -> submitted`` here and in its ``logs/job.jsonl``."""
    log.info("job %s -> submitted (by %s)", job.job_id, subject, extra={"job_id": job.job_id})
    await arecord(
        job.workspace,
        "transition",
        job.job_id,
        service="gateway",
        only_if_reachable=True,
        to_state=job.status.value,
        submitter=subject,
    )


async def _holder(gw: Gateway, job_id: str) -> Job:
    """The job holding a workspace; one claimed a moment ago may still be being stored."""
    for _ in range(HOLDER_WAIT_TRIES):
        job = await gw.store.get(job_id)
        if job is not None:
            return job
        await asyncio.sleep(HOLDER_WAIT_S)
    raise api_error(
        ErrorCode.INVALID_STATE,
        "this workspace already has a job being submitted; one job per workspace at a time",
    )


async def _accepted(gw: Gateway, job: Job) -> web.Response:
    await gw.publish_outbox(job)
    return ok({"submitted": True, "job_id": job.job_id, "job": public_job(job)}, status=202)


def _json_digest(body: SubmitFields, workspace: Path) -> str:
    canonical = json.dumps(
        [str(workspace), body.spec, body.priority, body.callback_url], sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def submit_job(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    if request.content_type.startswith("multipart/"):
        return await _submit_upload(gw, request)
    body = validate(SubmitRequest, json_body(request), "submission")
    root = gw.settings.data_root
    workspace = resolve_workspace(root, body.workspace)
    check_path_rights(request[PRINCIPAL], root, workspace, body.workspace)
    workspace = existing_workspace(root, body.workspace)
    admitted = await _admit(gw, request, body, workspace, _json_digest(body, workspace))
    return admitted if isinstance(admitted, web.Response) else await _accepted(gw, admitted)


async def _submit_upload(gw: Gateway, request: web.Request) -> web.Response:
    """Multipart: an ``archive`` part (tar/tar.gz/tar.xz/zip of a workspace) and optional fields.

    Whatever is unpacked is removed again unless a new job now owns it.
    """
    settings = gw.settings
    _idempotency_key(request, request[PRINCIPAL])  # a malformed key is refused before unpacking
    uploads = settings.data_root / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    target = uploads / uuid.uuid4().hex
    with tempfile.TemporaryDirectory(dir=uploads, prefix=".receiving-") as tmp:
        form = await read_form(
            request, Path(tmp), settings.max_upload_bytes, settings.max_json_body_bytes
        )
        fields = validate(SubmitFields, form.fields, "submission")
        assert form.archive is not None  # read_form refuses a form without one
        limits = Limits(settings.max_upload_files, settings.max_unpacked_bytes)
        await _unpack(form.archive, target, limits)
    admitted: Job | web.Response | None = None
    try:
        workspace = await asyncio.to_thread(_single_root, target)
        admitted = await _admit(gw, request, fields, workspace, form.digest())
    finally:
        if not isinstance(admitted, Job):  # refused, or an existing job answered: not needed
            await asyncio.to_thread(shutil.rmtree, target, ignore_errors=True)
    return admitted if isinstance(admitted, web.Response) else await _accepted(gw, admitted)


async def _unpack(archive: Path, target: Path, limits: Limits) -> None:
    """Unpack in a thread; if this request is cancelled meanwhile, clean up once it ends."""
    work = asyncio.ensure_future(asyncio.to_thread(extract_workspace, archive, target, limits))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        work.add_done_callback(lambda _: shutil.rmtree(target, ignore_errors=True))
        raise


def _single_root(target: Path) -> Path:
    """The unpacked workspace: the archive's root, or its one top-level folder."""
    target = target.resolve()
    if (target / "meta.json").exists():
        return target
    children = list(target.iterdir())
    if len(children) == 1 and (children[0] / "meta.json").is_file():
        return children[0]
    return target


def _visible(job: Job | None, principal: Principal, job_id: str) -> Job:
    if job is None or not _visible_to(job, principal):
        raise api_error(ErrorCode.NOT_FOUND, f"no job {shown(job_id)}", job_id=shown(job_id))
    return job


async def _job(request: web.Request) -> Job:
    job_id = request.match_info["job_id"]
    if len(job_id) > MAX_JOB_ID:
        raise api_error(ErrorCode.NOT_FOUND, f"no job {shown(job_id)}", job_id=shown(job_id))
    job = await request.app[GATEWAY].store.get(job_id)
    return _visible(job, request[PRINCIPAL], job_id)


async def get_job(request: web.Request) -> web.Response:
    job = await _job(request)
    queue = await queue_position(request.app[GATEWAY], job)
    shown_job = public_job(job)
    if queue is not None:
        shown_job["queue"] = queue.model_dump(mode="json")
    return ok(shown_job)


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
            "version": len(result_versions(job)),
            "result": job.result.model_dump(mode="json"),
        }
    )


def result_versions(job: Job) -> list[Result]:
    """Every result the job was given, newest first (a job stored before results were kept
    has its one result)."""
    kept = job.result_versions or ([job.result] if job.result is not None else [])
    return kept[::-1]


async def get_results(request: web.Request) -> web.Response:
    """Every version of the job's result, newest first: a re-score adds one, none is lost."""
    job = await _job(request)
    versions = result_versions(job)
    shown_versions = [
        {"version": len(versions) - index, "result": result.model_dump(mode="json")}
        for index, result in enumerate(versions)
    ]
    return ok({"job_id": job.job_id, "status": job.status.value, "results": shown_versions})


def _tail(path: Path, lines: int) -> tuple[str, bool] | None:
    """The last ``lines`` of the log; None when it is absent or a link (never followed)."""
    if path.parent.is_symlink():
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - LOG_TAIL_MAX_BYTES))
        data = handle.read().decode("utf-8", errors="replace")
    kept = data.splitlines()[-lines:]
    return "\n".join(kept), size > LOG_TAIL_MAX_BYTES or len(data.splitlines()) > lines


async def get_logs(request: web.Request) -> web.Response:
    job = await _job(request)
    try:
        lines = max(1, min(5000, int(_query(request, "tail") or "200")))
    except ValueError as exc:
        raise api_error(ErrorCode.CONFIG_VALIDATION_ERROR, "tail must be a whole number") from exc
    path = Path(job.workspace) / "logs" / "container.log"
    tail = await asyncio.to_thread(_tail, path, lines)
    if tail is None:
        raise api_error(ErrorCode.NOT_FOUND, f"job {job.job_id} has no container log yet")
    content, truncated = tail
    return ok(
        {
            "job_id": job.job_id,
            "path": "logs/container.log",
            "content": content,
            "truncated": truncated,
        }
    )


def _query(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and len(value) > MAX_QUERY_VALUE:
        raise api_error(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"query parameter {name!r} is longer than {MAX_QUERY_VALUE} characters",
        )
    return value


def _date(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 date or time; without a zone it is UTC."""
    text = _query(request, name)
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise api_error(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"{name} must be an ISO 8601 date or time, e.g. 2026-11-29T18:00:00Z",
            parameter=name,
        ) from exc


def _list_query(request: web.Request, principal: Principal) -> ListQuery:
    submitter = _query(request, "submitter") if principal.is_admin else principal.subject
    status = _query(request, "status")
    raw: dict[str, Any] = {
        "submitter": submitter,
        "scorer": _query(request, "scorer"),
        "cursor": _query(request, "cursor"),
        "limit": _query(request, "limit") or "50",
        "status": frozenset(status.split(",")) if status is not None else None,
        "created_from": _date(request, "created_from"),
        "created_to": _date(request, "created_to"),
    }
    try:
        return ListQuery.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        raise validation_error(exc, "the list query") from exc


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
    if reason is not None and (len(reason) > MAX_REASON or not reason.isprintable()):
        raise api_error(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"reason must be at most {MAX_REASON} printable characters",
        )
    event = RescoreRequested(job_id=job.job_id, requested_by=principal.subject, reason=reason)
    await request.app[GATEWAY].bus.publish(event)
    return ok({"job_id": job.job_id, "rescore_requested": True}, status=202)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/jobs", submit_job),
        web.get("/v1/jobs", list_jobs),
        web.get("/v1/jobs/{job_id}", get_job),
        web.get("/v1/jobs/{job_id}/result", get_result),
        web.get("/v1/jobs/{job_id}/results", get_results),
        web.get("/v1/jobs/{job_id}/logs", get_logs),
        web.post("/v1/jobs/{job_id}/cancel", cancel_job),
        web.post("/v1/jobs/{job_id}/rescore", rescore_job),
    ]
