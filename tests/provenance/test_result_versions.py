"""Re-score keeps every earlier result, newest first in the API, on both job stores; a pinned
scorer version that is not loaded is refused at submission.

The whole embedded platform (gateway, scheduler, local executor, scorer service) over HTTP, with
the in-memory bus and the SQLite store, and again with FerretDB (MongoDB wire); the example
workspace's real participant program runs on the local backend. Nothing is faked.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.jobs import Job, JobStatus, new_job
from shared.models import JobSpec, Result
from shared.store import JobStore, JobUpdate
from tests.e2e.harness import ADMIN_KEY, make_settings, running_platform
from tests.provenance.conftest import mongo_url

pytestmark = pytest.mark.slow


async def wait_for_versions(platform: Any, job_id: str, count: int) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        data: dict[str, Any] = await platform.call("GET", f"/v1/jobs/{job_id}/results")
        if len(data["results"]) >= count and data["status"] in ("succeeded", "failed"):
            return data
        assert asyncio.get_running_loop().time() < deadline, data["status"]
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("store", [pytest.param("mongo", marks=pytest.mark.mongo), "sqlite"])
async def test_a_rescore_keeps_both_versions_newest_first(tmp_path: Path, store: str) -> None:
    options = {"store": store, "mongo_url": mongo_url()} if store == "mongo" else {}
    async with running_platform(make_settings(tmp_path, **options)) as platform:
        name = platform.add_workspace("classification")
        ws = platform.settings.gateway.data_root / name
        job_id = await platform.submit(name)
        first = await platform.wait(job_id)
        assert first["status"] == "succeeded", first
        assert "result_versions" not in first  # the job view stays small
        assert not (ws / ".autoscorer" / "participant").exists()  # removed after the run

        # the organiser fixes the ground truth (one byte) and re-scores
        gt = ws / "input" / "gt.csv"
        data = bytearray(gt.read_bytes())
        data[-2] = ord("x") if data[-2] != ord("x") else ord("y")
        gt.write_bytes(bytes(data))
        await platform.call("POST", f"/v1/jobs/{job_id}/rescore", params={"reason": "gt fix"})
        listed = await wait_for_versions(platform, job_id, 2)

        assert [v["version"] for v in listed["results"]] == [2, 1]
        newest, oldest = (v["result"] for v in listed["results"])
        assert oldest == first["result"]
        assert newest["provenance"]["scored_at"] > oldest["provenance"]["scored_at"]
        assert (
            newest["provenance"]["ground_truth"]["sha256"]
            != (oldest["provenance"]["ground_truth"]["sha256"])
        )
        expected_gt = hashlib.sha256(gt.read_bytes()).hexdigest()
        [gt_file] = newest["provenance"]["ground_truth"]["files"]
        assert gt_file == {"path": "input/gt.csv", "size": len(data), "sha256": expected_gt}
        assert newest["provenance"]["predictions"] == oldest["provenance"]["predictions"]
        # who submitted and when come from the job; the local backend has no image
        job = await platform.call("GET", f"/v1/jobs/{job_id}")
        assert newest["provenance"]["submitted_by"] == "ops" == job["submitter"]
        assert newest["provenance"]["submitted_at"] == job["created_at"]
        assert newest["provenance"]["job_id"] == job_id
        assert newest["provenance"]["image"]["backend"] == "local"
        assert newest["provenance"]["image"]["image_id"] is None
        current = await platform.call("GET", f"/v1/jobs/{job_id}/result")
        assert current["version"] == 2
        assert current["result"] == newest


async def test_an_unloaded_pinned_version_and_object_storage_are_refused_at_submission(
    tmp_path: Path,
) -> None:
    async with running_platform(make_settings(tmp_path)) as platform:
        name = platform.add_workspace("classification")
        meta = json.loads((platform.settings.gateway.data_root / name / "meta.json").read_text())
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        url = platform.url + "/v1/jobs"
        async with aiohttp.ClientSession() as session:
            for scorer, status in (
                ("classification_f1@0.0.1", 422),
                ("classification_f1@1.0.0", 202),
            ):
                body = {"workspace": name, "spec": {**meta, "scorer": scorer}}
                async with session.post(url, json=body, headers=headers) as resp:
                    answer = await resp.json()
                assert resp.status == status, answer
                if status == 422:
                    error = answer["error"]
                    assert error["code"] == "SCORER_NOT_FOUND"
                    assert error["details"]["loaded_version"] == "1.0.0"
                    assert error["details"]["version"] == "0.0.1"
                else:
                    finished = await platform.wait(answer["data"]["job_id"])
                    assert finished["status"] == "succeeded", finished
                    provenance = finished["result"]["provenance"]
                    assert provenance["scorer"]["pinned"] == "1.0.0"
            # object storage is refused, not silently ignored
            body = {"workspace": name, "spec": {**meta, "input_uri": "s3://bucket/input"}}
            async with session.post(url, json=body, headers=headers) as resp:
                answer = await resp.json()
            assert resp.status == 400, answer  # an invalid spec, as any other
            assert answer["error"]["code"] == "CONFIG_VALIDATION_ERROR"
            assert "object storage is not supported yet" in json.dumps(answer["error"])


async def test_every_result_written_is_a_version_in_the_store(store: JobStore) -> None:
    """The store keeps every result a transition writes (no read-modify-write in the caller)."""
    job = new_job(JobSpec(scorer="classification_f1"), workspace="/ws/versions")
    assert (await store.create(job)).created
    S = JobStatus
    for a, b in ((S.SUBMITTED, S.QUEUED), (S.QUEUED, S.RUNNING), (S.RUNNING, S.SCORING)):
        assert (await store.transition(job.job_id, a, b)).applied
    results = [Result(summary={"score": 0.5}), Result(summary={"score": 0.75})]
    moved = await store.transition(
        job.job_id, S.SCORING, S.SUCCEEDED, JobUpdate(result=results[0]), event_id="e1"
    )
    assert moved.job.result_versions == results[:1]
    assert (await store.transition(job.job_id, S.SUCCEEDED, S.SCORING)).applied  # re-score
    again = await store.transition(
        job.job_id, S.SCORING, S.SUCCEEDED, JobUpdate(result=results[1]), event_id="e2"
    )
    assert again.job.result_versions == results
    duplicate = await store.transition(
        job.job_id, S.SCORING, S.SUCCEEDED, JobUpdate(result=results[1]), event_id="e2"
    )
    assert not duplicate.applied
    stored = await store.get(job.job_id)
    assert isinstance(stored, Job)
    assert stored.result_versions == results
    assert stored.result == results[1]
