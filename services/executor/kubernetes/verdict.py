"""Follow one run's Pod until its verdict is known, settling races with the Job's deadline."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from services.executor.kubernetes.api import KubeApi
from services.executor.kubernetes.status import (
    Verdict,
    classify_pod,
    job_hit_deadline,
    killed_at_deadline,
    timeout_verdict,
)
from services.executor.kubernetes.watch import follow_pods
from shared.errors import ErrorCode, execution_error

Json = dict[str, Any]

# failures that may really be the Job controller killing the pod at its deadline
_MAYBE_DEADLINE = frozenset(
    {ErrorCode.CONTAINER_EXIT_NONZERO, ErrorCode.CONTAINER_FAILED, ErrorCode.EXEC_ERROR}
)


@dataclass(frozen=True, slots=True)
class Watched:
    """What the executor learnt: the verdict and the pod it came from (for its log)."""

    verdict: Verdict
    pod: Json | None

    @property
    def pod_name(self) -> str | None:
        name = (self.pod or {}).get("metadata", {}).get("name")
        return str(name) if name else None


def vanished(pod: Json) -> Verdict:
    name = pod.get("metadata", {}).get("name")
    return Verdict(
        error=execution_error(
            ErrorCode.EXEC_ERROR, f"pod {name} was deleted before its program finished", pod=name
        )
    )


async def settle(
    api: KubeApi, job_name: str, time_limit: int, verdict: Verdict, pod: Json
) -> Verdict:
    """A failure the Job's deadline explains is a timeout, whatever the pod says."""
    if verdict.error is None or verdict.error.code not in _MAYBE_DEADLINE:
        return verdict
    job = await api.read_job(job_name)
    if (job is not None and job_hit_deadline(job)) or killed_at_deadline(verdict, time_limit):
        timed_out = timeout_verdict(pod, time_limit)
        return replace(timed_out, exit_code=verdict.exit_code, image_id=verdict.image_id)
    return verdict


async def first_verdict(
    api: KubeApi, selector: str, watch_timeout_s: int, seen: dict[str, Json]
) -> Watched:
    """The first pod state that decides the run (a terminal state, a pull failure, a deletion).

    ``seen["pod"]`` is the latest pod state, for a caller that gives up waiting.
    """
    async with aclosing(follow_pods(api, selector, watch_timeout_s)) as events:
        async for event in events:
            seen["pod"] = event.pod
            if event.type == "DELETED":
                return Watched(classify_pod(event.pod) or vanished(event.pod), event.pod)
            verdict = classify_pod(event.pod)
            if verdict is not None:
                return Watched(verdict, event.pod)
    raise AssertionError("follow_pods never ends")  # pragma: no cover


async def await_verdict(
    api: KubeApi,
    *,
    job_name: str,
    selector: str,
    time_limit: int,
    watch_timeout_s: int,
    grace_s: float,
) -> Watched:
    """The run's verdict; past ``time_limit + grace_s`` a timeout even if the API never said so."""
    last: dict[str, Json] = {}
    try:
        async with asyncio.timeout(time_limit + grace_s):
            watched = await first_verdict(api, selector, watch_timeout_s, last)
    except TimeoutError:
        return Watched(timeout_verdict(last.get("pod"), time_limit), last.get("pod"))
    settled = await settle(api, job_name, time_limit, watched.verdict, watched.pod or {})
    return Watched(settled, watched.pod)
