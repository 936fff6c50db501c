"""/v1/jobs/{id}/report and /v1/jobs/{id}/artifacts/{name}: what a result shows, as files.

Both read the job exactly as ``GET /v1/jobs/{id}/result`` does (``jobs_api._job``: the same
tenancy and role rules, and NOT_FOUND for a job the caller may not see). The report is rendered
from the stored result (or the job's error) and the workspace's run info, log and plots
(``shared.report``); an artifact is served only by its name in the stored result, from inside the
workspace's ``output/`` with no link followed, and only while its bytes match the stored sha256.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web

from services.gateway.http import api_error, shown
from services.gateway.jobs_api import _job
from shared.errors import ErrorCode
from shared.models import Artifact
from shared.report import from_job, render
from shared.report.files import read_bounded, sha256_of
from shared.report.html import CSP

ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "application/json", "text/csv", "text/plain"})
"""Media types served as such; any other (a plugin may declare text/html) is a download."""
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


async def get_report(request: web.Request) -> web.Response:
    job = await _job(request)
    data = await asyncio.to_thread(from_job, job)
    if data is None:
        raise api_error(
            ErrorCode.NOT_FOUND,
            f"job {job.job_id} has no result yet",
            job_id=job.job_id,
            status=job.status.value,
        )
    page = await asyncio.to_thread(render, data)
    headers = {**HEADERS, "Content-Security-Policy": CSP}
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=headers)


def _artifact_bytes(workspace: Path, artifact: Artifact) -> bytes | None:
    data = read_bounded(workspace, artifact.path, "output", MAX_ARTIFACT_BYTES)
    if data is None or sha256_of(data) != artifact.sha256:
        return None
    return data


async def get_artifact(request: web.Request) -> web.Response:
    job = await _job(request)
    name = request.match_info["name"]
    artifact = job.result.artifacts.get(name) if job.result is not None else None
    if not ARTIFACT_NAME.match(name) or artifact is None:
        raise api_error(
            ErrorCode.NOT_FOUND,
            f"job {job.job_id} has no artifact {shown(name)}",
            job_id=job.job_id,
            name=shown(name),
        )
    data = await asyncio.to_thread(_artifact_bytes, Path(job.workspace), artifact)
    if data is None:
        raise api_error(
            ErrorCode.NOT_FOUND,
            f"artifact {name} of job {job.job_id} is no longer available as scored "
            "(removed, or changed since: its sha256 does not match)",
            job_id=job.job_id,
            name=name,
        )
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", Path(artifact.path).name)[:128]
    inline = artifact.media_type in INLINE_TYPES
    headers = {
        **HEADERS,
        "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{filename}"',
        "Content-Security-Policy": "default-src 'none'",
        "ETag": f'"{artifact.sha256}"',
    }
    media_type = artifact.media_type if inline else "application/octet-stream"
    return web.Response(body=data, content_type=media_type, headers=headers)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/jobs/{job_id}/report", get_report),
        web.get("/v1/jobs/{job_id}/artifacts/{name}", get_artifact),
    ]
