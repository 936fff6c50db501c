"""Peak memory and CPU seconds of a running container, from the engine's stats stream.

The engine only reports stats while the container runs, so the sampler keeps the latest values
(one sample a second); for runs shorter than a sample the fields stay None. On cgroup v1 the
peak is ``memory_stats.max_usage``; on cgroup v2 (no peak reported) the highest usage seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any, cast

import aiodocker
from aiodocker.containers import DockerContainer


class StatsSampler:
    def __init__(self, container: DockerContainer) -> None:
        self._container = container
        self.peak_memory_bytes: int | None = None
        self.cpu_seconds: float | None = None
        self.pids_peak: int | None = None

    async def run(self) -> None:
        stream = cast(AsyncGenerator[dict[str, Any], None], self._container.stats(stream=True))
        with contextlib.suppress(aiodocker.DockerError):
            async with contextlib.aclosing(stream):
                async for sample in stream:
                    self._record(sample)

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
