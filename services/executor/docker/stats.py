"""Peak memory and CPU seconds of a running container, from the engine's stats stream.

The engine only reports stats while the container runs, so the sampler keeps the latest values
(one sample a second); for runs shorter than a sample the fields stay None. On cgroup v1 the
peak is ``memory_stats.max_usage``; on cgroup v2 (no peak reported) the highest usage seen.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer


class StatsSampler:
    """Reads ``GET /containers/{id}/stats`` (newline-delimited JSON) until cancelled.

    The engine keeps the stream open after the container stops, so the caller cancels the
    sampler; it reads the response itself (aiodocker's ``stats()`` would leave the response
    unreleased when its generator is abandoned) and closes it on the way out.
    """

    def __init__(self, docker: aiodocker.Docker, container: DockerContainer) -> None:
        self._docker = docker
        self._container = container
        self.peak_memory_bytes: int | None = None
        self.cpu_seconds: float | None = None
        self.pids_peak: int | None = None

    async def run(self) -> None:
        path = f"containers/{self._container.id}/stats"
        query = self._docker._query(path, params={"stream": "1"}, timeout=aiohttp.ClientTimeout())
        with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError):
            async with query as response:
                try:
                    async for line in response.content:
                        self._record(json.loads(line))
                finally:
                    response.close()

    def _record(self, sample: dict[str, Any]) -> None:
        memory = sample.get("memory_stats") or {}
        peak = memory.get("max_usage") or memory.get("usage")
        if peak:
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, int(peak))
        total = ((sample.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        if total:
            self.cpu_seconds = int(total) / 1e9
        pids = (sample.get("pids_stats") or {}).get("current")
        if pids:
            self.pids_peak = max(self.pids_peak or 0, int(pids))
