"""(c) The whole flow in the embedded mode: in-memory bus, SQLite store, local backend."""

import asyncio
from pathlib import Path

import pytest

from services.scorer.engine import score_workspace
from services.scorer.registry import ScorerRegistry
from shared.workspace import Workspace
from tests.e2e.harness import EXAMPLE_METRICS, make_settings, running_platform


@pytest.mark.slow
async def test_every_example_over_http_reaches_the_webhook_with_the_right_scores(tmp_path):
    async with running_platform(make_settings(tmp_path)) as platform:
        jobs = {}
        for example in EXAMPLE_METRICS:
            jobs[await platform.submit(platform.add_workspace(example))] = example
        finished = await asyncio.gather(*(platform.wait(job_id) for job_id in jobs))
        assert [j["status"] for j in finished] == ["succeeded"] * len(jobs), finished
        await platform.wait_for_webhooks(len(jobs))
        scores = platform.receiver.verified_scores()
        assert set(scores) == set(jobs)
        registry = ScorerRegistry.with_builtins()
        for job_id, example in jobs.items():
            ws = Workspace.at(Path(platform.settings.gateway.data_root) / example)
            expected = score_workspace(registry, ws, write=False)
            metric = EXAMPLE_METRICS[example]
            assert scores[job_id].result.summary[metric] == expected.summary[metric]
            job = next(j for j in finished if j["job_id"] == job_id)
            assert [h["status"] for h in job["history"]] == [
                "submitted",
                "queued",
                "running",
                "scoring",
                "succeeded",
            ]
