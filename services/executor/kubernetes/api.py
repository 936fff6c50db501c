"""The few Kubernetes API calls the executor makes, speaking plain JSON dicts.

Exactly these endpoints are used (and faked in tests/executor/k8s_fake.py):
create/read/delete/list Job (batch/v1), list and watch Pods by label selector, read a Pod's log.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch as k8s_watch

from services.executor.kubernetes.client import api_errors, is_status
from shared.errors import ErrorCode

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PodList:
    items: list[Json]
    resource_version: str


@dataclass(frozen=True, slots=True)
class LogRead:
    data: bytes
    truncated: bool


class KubeApi:
    """Thin async wrapper: JSON in, JSON out, BACKEND_UNAVAILABLE for transport failures."""

    def __init__(self, api_client: Any, namespace: str, request_timeout_s: float) -> None:
        self._client = api_client
        # typed loosely: manifests go in as JSON dicts, logs come back as raw responses
        self._batch: Any = k8s.BatchV1Api(api_client)
        self._core: Any = k8s.CoreV1Api(api_client)
        self._ns = namespace
        self._timeout = request_timeout_s

    def _json(self, model: Any) -> Json:
        data: Json = self._client.sanitize_for_serialization(model)
        return data

    async def create_job(self, body: Json) -> Json | None:
        """The created Job, or None when a Job of that name already exists (a redelivery)."""
        with api_errors("create a Job", rejected=ErrorCode.CONTAINER_CREATE_FAILED):
            try:
                created = await self._batch.create_namespaced_job(
                    self._ns, body, _request_timeout=self._timeout
                )
            except k8s.ApiException as exc:
                if is_status(exc, 409):
                    return None
                raise
        return self._json(created)

    async def read_job(self, name: str) -> Json | None:
        with api_errors("read a Job"):
            try:
                job = await self._batch.read_namespaced_job(
                    name, self._ns, _request_timeout=self._timeout
                )
            except k8s.ApiException as exc:
                if is_status(exc, 404):
                    return None
                raise
        return self._json(job)

    async def delete_job(self, name: str, propagation: str) -> bool:
        """True when a Job was deleted, False when there was none."""
        with api_errors("delete a Job"):
            try:
                await self._batch.delete_namespaced_job(
                    name, self._ns, propagation_policy=propagation, _request_timeout=self._timeout
                )
            except k8s.ApiException as exc:
                if is_status(exc, 404):
                    return False
                raise
        return True

    async def list_jobs(self, selector: str) -> list[Json]:
        with api_errors("list Jobs"):
            jobs = await self._batch.list_namespaced_job(
                self._ns, label_selector=selector, _request_timeout=self._timeout
            )
        return [self._json(item) for item in jobs.items]

    async def list_pods(self, selector: str) -> PodList:
        with api_errors("list Pods"):
            pods = await self._core.list_namespaced_pod(
                self._ns, label_selector=selector, _request_timeout=self._timeout
            )
        return PodList([self._json(p) for p in pods.items], pods.metadata.resource_version or "")

    async def watch_pods(
        self, selector: str, resource_version: str, timeout_s: int
    ) -> AsyncGenerator[tuple[str, Json], None]:
        """``(type, pod)`` events until the server ends the watch after ``timeout_s``.

        An expired resourceVersion (410 Gone, as an ERROR event or a status) raises
        ``ApiException(status=410)``: with ``timeout_seconds`` set the client does not retry it.
        """
        with api_errors("watch Pods", passthrough=(410,)):
            async with k8s_watch.Watch() as watch:
                stream = watch.stream(
                    self._core.list_namespaced_pod,
                    self._ns,
                    label_selector=selector,
                    resource_version=resource_version,
                    timeout_seconds=timeout_s,
                    allow_watch_bookmarks=True,
                    _request_timeout=timeout_s + self._timeout,
                )
                async for event in stream:
                    yield event["type"], event["raw_object"]

    async def read_log(self, pod: str, container: str, cap_bytes: int) -> LogRead | None:
        """The first ``cap_bytes`` of the container's log, or None when there is none.

        The API answers 404 when the pod is gone and 400 when its container never started.
        """
        with api_errors("read a Pod log"):
            response = await self._core.read_namespaced_pod_log(
                pod,
                self._ns,
                container=container,
                limit_bytes=cap_bytes + 1,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            try:
                if response.status in {400, 404}:
                    return None
                if response.status >= 300:
                    raise k8s.ApiException(status=response.status, reason=response.reason)
                data = await read_capped(response.content, cap_bytes + 1)
            finally:
                response.release()
        return LogRead(data[:cap_bytes], truncated=len(data) > cap_bytes)


async def read_capped(content: Any, limit: int) -> bytes:
    """Read a stream up to ``limit`` bytes, whatever the server sends."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk: bytes = await content.read(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
