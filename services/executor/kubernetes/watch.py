"""List-then-watch of a run's Pods that survives ``410 Gone`` by listing again.

A watch resumes from the last resourceVersion it saw. When the API server has compacted that
version away it answers 410 Gone; the only correct recovery is a fresh list (whose state may
hold changes the watch missed) and a new watch from the list's resourceVersion.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from services.executor.kubernetes.api import KubeApi

log = logging.getLogger(__name__)

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PodEvent:
    type: str  # LISTED (from a list), ADDED, MODIFIED, DELETED
    pod: Json


def resource_version(obj: Json) -> str | None:
    value = obj.get("metadata", {}).get("resourceVersion")
    return str(value) if value else None


async def follow_pods(
    api: KubeApi, selector: str, timeout_s: int
) -> AsyncGenerator[PodEvent, None]:
    """Every state of the selected Pods, forever: the caller stops when it has seen enough."""
    listing = await api.list_pods(selector)
    for pod in listing.items:
        yield PodEvent("LISTED", pod)
    version = listing.resource_version
    while True:
        try:
            async with aclosing(api.watch_pods(selector, version, timeout_s)) as events:
                async for kind, pod in events:
                    version = resource_version(pod) or version
                    if kind != "BOOKMARK":
                        yield PodEvent(kind, pod)
        except ApiException as exc:
            if exc.status != 410:
                raise
            log.info(
                "pod watch for %s expired at resourceVersion %s: listing again", selector, version
            )
            listing = await api.list_pods(selector)
            for pod in listing.items:
                yield PodEvent("LISTED", pod)
            version = listing.resource_version
