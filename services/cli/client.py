"""``autoscorer submit`` and ``autoscorer status``: a small client of the gateway's /v1 API."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from services.cli.serve import KEY_FILE
from shared.errors import AutoscorerError, ErrorCode, ErrorInfo, Fault, Stage

DEFAULT_URL = "http://127.0.0.1:8080"
FINAL = frozenset({"succeeded", "failed", "cancelled"})
SKIPPED = frozenset({"output", "logs", ".autoscorer"})


def api_key(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if env := os.environ.get("AUTOSCORER_API_KEY"):
        return env
    return KEY_FILE.read_text().strip() if KEY_FILE.is_file() else None


def pack_workspace(root: Path) -> bytes:
    """A tar.gz of the workspace without output/, logs/ and private files."""
    if not (root / "meta.json").is_file():
        raise AutoscorerError(
            ErrorCode.MISSING_FILE,
            f"{root}/meta.json is missing",
            stage=Stage.VALIDATION,
            details={"path": str(root / "meta.json")},
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(root.iterdir()):
            if path.name not in SKIPPED:
                tar.add(path, arcname=path.name)
    return buffer.getvalue()


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, key: str | None) -> None:
        self._session, self._url = session, url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            async with self._session.request(
                method, self._url + path, headers=self._headers, **kw
            ) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as exc:
            raise AutoscorerError(
                ErrorCode.BACKEND_UNAVAILABLE,
                f"gateway {self._url}: {exc}",
                stage=Stage.PLATFORM,
                details={"url": self._url},
            ) from exc
        if not body.get("ok"):
            raise AutoscorerError.from_info(ErrorInfo.model_validate(body["error"]))
        return body["data"]

    async def submit_archive(self, archive: bytes, priority: int) -> Any:
        form = aiohttp.FormData()
        form.add_field("archive", archive, filename="workspace.tar.gz")
        form.add_field("priority", str(priority))
        return await self._call("POST", "/v1/jobs", data=form)

    async def submit_path(self, workspace: str, priority: int) -> Any:
        return await self._call(
            "POST", "/v1/jobs", json={"workspace": workspace, "priority": priority}
        )

    async def job(self, job_id: str) -> Any:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def wait(self, job_id: str, wait_s: float, on_status: Any) -> Any:
        deadline, seen = time.monotonic() + wait_s, None
        while True:
            job = await self.job(job_id)
            if job["status"] != seen:
                seen = job["status"]
                on_status(job)
            if seen in FINAL:
                return job
            if time.monotonic() > deadline:
                raise AutoscorerError(  # the client's own wait ran out, not the job
                    ErrorCode.TIMEOUT_ERROR,
                    f"job {job_id} still {seen} after {wait_s}s",
                    stage=Stage.PLATFORM,
                    fault=Fault.PLATFORM,
                    details={"job_id": job_id, "status": seen},
                )
            await asyncio.sleep(0.25)
