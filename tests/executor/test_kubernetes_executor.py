"""The Kubernetes executor against an HTTP-level fake of the API, for what the real one cannot show.

Everything a real control plane shows is tested there (test_kubernetes_cluster.py: success,
exit codes, OOM, image pulls, deadlines, cancel, adoption, cleanup, 410 Gone, RBAC, GPUs). What
stays here needs a kubelet kwok does not imitate (a termination message from the log, a kill at
the deadline racing the Job controller, a container that never started refusing its log, a pod
writing output/), or an API that misbehaves on cue (5xx on logs, 422 on create), or the exact
request the executor sent (limitBytes, propagationPolicy, watch timeouts). tests/executor/
k8s_fake.py is an aiohttp app reached through the REAL kubernetes-asyncio client (token auth).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.executor.kubernetes.names import job_name
from services.executor.registry import create_executor
from shared.errors import AutoscorerError, ErrorCode
from shared.models import JobSpec, RunOutcome
from shared.workspace import Workspace
from tests.executor import k8s_fake
from tests.executor.k8s_fake import FakeCluster, executor_settings, serve

JOB_ID = "job-k8s-1"


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
async def api_url(cluster: FakeCluster) -> AsyncIterator[str]:
    async with serve(cluster) as url:
        yield url


def settings(url: str, root: Path, **overrides: Any) -> dict[str, Any]:
    return executor_settings(url, str(root), **overrides)


@pytest.fixture
def pvc_root(tmp_path: Path) -> Path:
    return tmp_path / "pvc"


@pytest.fixture
async def executor(api_url: str, pvc_root: Path) -> AsyncIterator[Any]:
    executor = create_executor(settings(api_url, pvc_root))
    yield executor
    await executor.close()


def make_spec(**overrides: Any) -> JobSpec:
    body: dict[str, Any] = {
        "job_id": JOB_ID,
        "scorer": "classification_f1",
        "time_limit": 120,
        "resources": {"cpu": 1.5, "memory": "512Mi"},
        "container": {
            "image": "ghcr.io/team/model",
            "cmd": ["python", "run.py"],
            "env": {"SEED": "1"},
        },
    }
    body.update(overrides)
    return JobSpec.model_validate(body)


@pytest.fixture
def workspace(pvc_root: Path) -> Workspace:
    root = pvc_root / JOB_ID
    (root / "input").mkdir(parents=True)
    (root / "input" / "test.csv").write_text("id\n1\n")
    (root / "input" / "gt.csv").write_text("id,label\n1,a\n")
    (root / "meta.json").write_text(make_spec().model_dump_json())
    return Workspace.at(root)


async def run_once(body: dict[str, Any], ws: Workspace) -> RunOutcome:
    """``make_spec()`` run by an executor built from ``body`` for this one run."""
    executor = create_executor(body)
    try:
        outcome: RunOutcome = await executor.run(make_spec(), ws)
    finally:
        await executor.close()
    return outcome


def run_info(ws: Workspace) -> RunOutcome:
    return RunOutcome.model_validate_json((ws.logs_dir / "run_info.json").read_text())


async def test_image_pull_backoff_is_image_pull_failed(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    cluster.scenarios[JOB_ID] = k8s_fake.image_pull_backoff(
        'failed to pull "ghcr.io/team/model:latest": dial tcp: i/o timeout'
    )
    outcome = await executor.run(make_spec(), workspace)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.IMAGE_PULL_FAILED
    assert outcome.error.retryable
    assert cluster.deleted  # no Job is left to back off forever
    # the API refuses the log of a container that never started (400): a marker, not a crash
    assert b"no log" in (workspace.logs_dir / "container.log").read_bytes()


async def test_nonzero_exit_carries_the_termination_message_as_log_tail(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    cluster.scenarios[JOB_ID] = k8s_fake.exit_nonzero(3)
    outcome = await executor.run(make_spec(), workspace)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.CONTAINER_EXIT_NONZERO
    assert outcome.exit_code == 3
    assert outcome.error.logs == "Traceback: boom\n"
    assert run_info(workspace).error == outcome.error


async def test_deadline_kill_is_a_timeout_not_an_exit_code(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    cluster.scenarios[JOB_ID] = k8s_fake.deadline_killed()
    outcome = await executor.run(make_spec(), workspace)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.TIMEOUT_ERROR
    assert outcome.timed_out
    assert outcome.exit_code == 137


@pytest.mark.parametrize("as_status", [False, True], ids=["error-event", "http-410"])
async def test_watch_survives_410_gone_by_listing_again(
    executor: Any, cluster: FakeCluster, workspace: Workspace, as_status: bool
) -> None:
    cluster.scenarios[JOB_ID] = k8s_fake.gone_mid_watch(as_status=as_status)
    outcome = await executor.run(make_spec(), workspace)
    assert outcome.status == "succeeded"
    assert (workspace.logs_dir / "container.log").read_bytes() == b"survived a 410\n"
    lists, watches = cluster.pod_lists(), cluster.watches()
    assert len(lists) == 2  # the initial list and the re-list after 410
    assert len(watches) >= 2
    # the watch after the 410 starts from a version at or past the compaction point
    assert int(watches[-1]["resourceVersion"]) >= cluster.compacted_below
    assert int(watches[0]["resourceVersion"]) < cluster.compacted_below


async def test_log_is_capped_with_a_truncation_marker(
    api_url: str, pvc_root: Path, cluster: FakeCluster, workspace: Workspace
) -> None:
    cluster.scenarios[JOB_ID] = k8s_fake.success(log=b"x" * 5000)
    outcome = await run_once(settings(api_url, pvc_root, log_cap_bytes=1024), workspace)
    saved = (workspace.logs_dir / "container.log").read_bytes()
    assert saved.startswith(b"x" * 1024)
    assert saved[1024:] == b"\n[autoscorer: log truncated at 1024 bytes]\n"
    assert outcome.log_truncated
    assert cluster.calls("GET", "/log")[0]["limitBytes"] == "1025"


async def test_gpu_job_is_refused_when_the_config_forbids_gpus(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    # a platform fault (retryable elsewhere), so it is raised, not returned
    with pytest.raises(AutoscorerError) as caught:
        await executor.run(make_spec(resources={"gpus": 1}), workspace)
    assert caught.value.code is ErrorCode.RESOURCE_ERROR
    assert caught.value.retryable
    assert cluster.created == []
    assert run_info(workspace).status == "failed"


async def test_spec_without_container_fails_without_a_job(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    outcome = await executor.run(make_spec(container=None), workspace)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.CONFIG_VALIDATION_ERROR
    assert cluster.created == []
    assert run_info(workspace).status == "failed"


async def test_workspace_outside_the_pvc_mount_is_invalid(executor: Any, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outcome = await executor.run(make_spec(), Workspace.at(elsewhere))
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.WORKSPACE_INVALID


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_api_is_backend_unavailable_and_still_writes_run_info(
    pvc_root: Path, workspace: Workspace
) -> None:
    executor = create_executor(settings(f"http://127.0.0.1:{closed_port()}", pvc_root))
    try:
        with pytest.raises(AutoscorerError) as caught:
            await executor.run(make_spec(), workspace)
    finally:
        await executor.close()
    assert caught.value.code is ErrorCode.BACKEND_UNAVAILABLE
    assert caught.value.retryable
    info = json.loads((workspace.logs_dir / "run_info.json").read_text())
    assert info["error"]["code"] == "BACKEND_UNAVAILABLE"


async def test_a_second_run_of_a_running_job_is_refused(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    cluster.scenarios[JOB_ID] = k8s_fake.never_finishes()
    first = asyncio.create_task(executor.run(make_spec(), workspace))
    while not cluster.watches():
        await asyncio.sleep(0.01)
    with pytest.raises(AutoscorerError) as caught:
        await executor.run(make_spec(), workspace)
    assert caught.value.code is ErrorCode.EXEC_ERROR
    assert len(cluster.created) == 1
    await executor.cancel(JOB_ID)
    assert (await asyncio.wait_for(first, 10)).status == "cancelled"


async def test_a_spec_without_meta_json_still_gets_one_mounted(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    workspace.meta_path.unlink()
    await executor.run(make_spec(), workspace)
    mounted = workspace.participant_dir / "meta.json"
    assert JobSpec.model_validate_json(mounted.read_text()).job_id == JOB_ID


async def test_a_manifest_the_api_rejects_is_container_create_failed(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    cluster.reject_create = True
    with pytest.raises(AutoscorerError) as caught:
        await executor.run(make_spec(), workspace)
    assert caught.value.code is ErrorCode.CONTAINER_CREATE_FAILED
    assert caught.value.details["status"] == 422
    assert run_info(workspace).error is not None


async def test_stale_output_is_cleared_and_a_missing_expected_file_fails_the_run(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    workspace.output_dir.mkdir()
    (workspace.output_dir / "pred.csv").write_text("stale\n")
    outcome = await executor.run(make_spec(expected_outputs=["pred.csv"]), workspace)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.OUTPUT_MISSING
    assert outcome.exit_code == 0
    assert not (workspace.output_dir / "pred.csv").exists()


async def test_output_written_by_the_pod_passes_the_check(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    scenario = k8s_fake.success()
    scenario.on_finish = lambda: (workspace.output_dir / "pred.csv").write_text("id,label\n")
    cluster.scenarios[JOB_ID] = scenario
    outcome = await executor.run(make_spec(expected_outputs=["pred.csv"]), workspace)
    assert outcome.status == "succeeded"
    assert workspace.output_dir.stat().st_mode & 0o777 == 0o777  # writable by uid 65534


async def test_output_over_the_cap_is_output_too_large(
    api_url: str, pvc_root: Path, cluster: FakeCluster, workspace: Workspace
) -> None:
    scenario = k8s_fake.success()
    scenario.on_finish = lambda: (workspace.output_dir / "big.bin").write_bytes(b"0" * 2048)
    cluster.scenarios[JOB_ID] = scenario
    outcome = await run_once(settings(api_url, pvc_root, output_cap_bytes=1024), workspace)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.OUTPUT_TOO_LARGE


async def test_a_watch_the_server_ends_is_resumed_without_listing_again(
    api_url: str, pvc_root: Path, cluster: FakeCluster, workspace: Workspace
) -> None:
    scenario = k8s_fake.success()
    scenario.step_delay = 0.7  # the pod finishes after the first 1 s watch has ended
    cluster.scenarios[JOB_ID] = scenario
    outcome = await run_once(settings(api_url, pvc_root, watch_timeout_s=1), workspace)
    assert outcome.status == "succeeded"
    assert len(cluster.watches()) >= 2
    assert len(cluster.pod_lists()) == 1
    assert all(w["timeoutSeconds"] == "1" for w in cluster.watches())


async def test_foreground_propagation_when_configured(
    api_url: str, pvc_root: Path, cluster: FakeCluster, workspace: Workspace
) -> None:
    await run_once(settings(api_url, pvc_root, delete_propagation="Foreground"), workspace)
    assert cluster.deleted == [(job_name(JOB_ID), "Foreground")]


async def test_a_log_the_api_fails_to_give_does_not_lose_the_verdict(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    cluster.scenarios[JOB_ID] = k8s_fake.oom_killed()
    cluster.break_logs = True
    outcome = await executor.run(make_spec(), workspace)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.CONTAINER_OOM
    note = (workspace.logs_dir / "container.log").read_text()
    assert note.startswith("[autoscorer: no log: the API failed")


async def test_a_network_request_is_refused_rather_than_silently_dropped(
    executor: Any, cluster: FakeCluster, workspace: Workspace
) -> None:
    spec = make_spec(container={"image": "m", "network_policy": "bridge"})
    outcome = await executor.run(spec, workspace)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.CONFIG_VALIDATION_ERROR
    assert cluster.created == []
