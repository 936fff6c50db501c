"""The Kubernetes executor and deploy/k8s against a REAL control plane (k8s_cluster.py).

The API server, its admission (restricted Pod Security, RBAC), the scheduler, the Job, garbage
collection and PV controllers are the real ones; the executor logs in with a token of its own
ServiceAccount, bound by deploy/k8s/executor-rbac.yaml. kwok stands in for the kubelet: a pod's
exit code, OOM kill, image pull failure and log are what its stage (chosen by the pod's env)
says, never a real program's; readiness of the services' Deployments is kwok's word, no probe
is sent.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from services.executor.kubernetes.api import KubeApi
from services.executor.kubernetes.config import KubernetesConfig
from services.executor.kubernetes.manifest import build_job
from services.executor.kubernetes.names import job_name, job_selector
from services.executor.registry import create_executor
from shared.errors import AutoscorerError, ErrorCode
from shared.models import JobSpec, RunOutcome
from shared.workspace import Workspace
from tests.executor.k8s_cluster import (
    CPU_NODE,
    GPU_NODE,
    KWOK_LOG,
    NAMESPACE,
    REPO,
    api_client,
    apply_deploy_manifests,
    executor_settings,
    kubectl,
    make_spec,
    make_workspace,
    new_job_id,
    require_control_plane,
    service_account_token,
)

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(180)]

Json = dict[str, Any]
DEPLOYMENTS = (
    "autoscorer-gateway",
    "autoscorer-scheduler",
    "autoscorer-scorer",
    "autoscorer-executor",
)
GPU_SETTINGS: Json = {
    "allow_gpus": True,
    "gpu_node_selector": {"autoscorer.test/gpu": "true"},
    "gpu_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


@pytest.fixture(scope="session")
def server() -> str:
    return require_control_plane()


@pytest.fixture(scope="session")
def applied(server: str) -> subprocess.CompletedProcess[str]:
    return apply_deploy_manifests()


@pytest.fixture(scope="session")
def token(applied: subprocess.CompletedProcess[str]) -> str:
    return service_account_token()


@pytest.fixture
async def executor(server: str, token: str) -> AsyncIterator[Any]:
    executor = create_executor(executor_settings(server, token))
    yield executor
    await executor.close()


@pytest.fixture
async def admin(applied: subprocess.CompletedProcess[str]) -> AsyncIterator[KubeApi]:
    """The cluster admin, for what the test itself looks at or sets up."""
    async with api_client() as client:
        yield KubeApi(client, NAMESPACE, 10)


@pytest.fixture
def job_id(request: pytest.FixtureRequest) -> str:
    return new_job_id(request.node.originalname.removeprefix("test_")[:20].replace("_", "-"))


@pytest.fixture
def workspace(job_id: str) -> Iterator[Workspace]:
    ws = make_workspace(job_id)
    yield ws
    shutil.rmtree(ws.root, ignore_errors=True)


async def run_with(settings: Json, spec: JobSpec, ws: Workspace) -> RunOutcome:
    """One run by an executor made for it from ``settings``."""
    executor = create_executor(settings)
    try:
        outcome: RunOutcome = await executor.run(spec, ws)
    finally:
        await executor.close()
    return outcome


def run_info(ws: Workspace) -> RunOutcome:
    return RunOutcome.model_validate_json((ws.logs_dir / "run_info.json").read_text())


async def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    """Poll the async ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def running_pod(admin: KubeApi, job_id: str) -> Json | None:
    pods = (await admin.list_pods(job_selector(job_id))).items
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    return running[0] if running else None


async def no_job_and_no_pod(admin: KubeApi, job_id: str) -> bool:
    return (
        await admin.read_job(job_name(job_id)) is None
        and not (await admin.list_pods(job_selector(job_id))).items
    )


# --- deploy/k8s on the real API -----------------------------------------------------------------


def test_kubectl_apply_k_is_admitted_under_restricted_pod_security(
    applied: subprocess.CompletedProcess[str],
) -> None:
    assert applied.returncode == 0
    # the API server warns about any workload whose pods would break the enforced profile
    assert "PodSecurity" not in applied.stderr, applied.stderr
    labels = kubectl(
        "get",
        "namespace",
        NAMESPACE,
        "-o",
        "jsonpath={.metadata.labels.pod-security\\.kubernetes\\.io/enforce}",
    ).stdout
    assert labels == "restricted"
    again = kubectl("apply", "-k", str(REPO / "deploy" / "k8s"), "--dry-run=server")
    assert "PodSecurity" not in again.stderr
    # the check above can fail: the namespace warns about templates that break the profile
    bad = kubectl(
        "create",
        "deployment",
        "unconfined",
        "-n",
        NAMESPACE,
        "--image=busybox",
        "--dry-run=server",
        "-o",
        "name",
    )
    assert "would violate PodSecurity" in bad.stderr


async def test_the_services_deployments_become_ready(admin: KubeApi) -> None:
    """Ready by kwok's word: kwok marks a scheduled pod Ready, it never calls the probes."""
    async with api_client() as client:
        apps = k8s.AppsV1Api(client)

        async def all_ready() -> bool:
            for name in DEPLOYMENTS:
                deployment = await apps.read_namespaced_deployment(name, NAMESPACE)
                if (deployment.status.ready_replicas or 0) != deployment.spec.replicas:
                    return False
            return True

        await wait_for("the Deployments to be ready", all_ready, timeout=90)
    pods = [
        p
        for p in (await admin.list_pods("app.kubernetes.io/name=autoscorer")).items
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert len(pods) == 7  # 2 gateways, 2 schedulers, 2 scorers, 1 executor
    assert {p["spec"]["nodeName"] for p in pods} == {CPU_NODE}  # the GPU node is tainted
    executor_pod = next(
        p for p in pods if p["metadata"]["labels"]["app.kubernetes.io/component"] == "executor"
    )
    assert executor_pod["spec"]["serviceAccountName"] == "autoscorer-executor"


def test_the_workspace_pvc_binds_to_the_provisioned_volume(
    applied: subprocess.CompletedProcess[str],
) -> None:
    deadline = time.monotonic() + 30
    phase = ""
    while time.monotonic() < deadline and phase != "Bound":
        phase = kubectl(
            "get", "pvc", "autoscorer-workspaces", "-n", NAMESPACE, "-o", "jsonpath={.status.phase}"
        ).stdout
        time.sleep(0.2)
    assert phase == "Bound"
    volume = kubectl(
        "get", "pvc", "autoscorer-workspaces", "-n", NAMESPACE, "-o", "jsonpath={.spec.volumeName}"
    ).stdout
    assert volume == "autoscorer-workspaces"


async def test_a_pod_breaking_the_restricted_profile_is_refused(
    applied: subprocess.CompletedProcess[str],
) -> None:
    # no securityContext: may run as root, escalate, keep capabilities, no seccomp profile
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unconfined"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    async with api_client() as client:
        with pytest.raises(ApiException) as caught:
            await k8s.CoreV1Api(client).create_namespaced_pod(NAMESPACE, pod)
    assert caught.value.status == 403
    assert "violates PodSecurity" in str(caught.value.body)


# --- the executor's runs ------------------------------------------------------------------------


async def test_success_reads_the_log_through_the_api(
    executor: Any, admin: KubeApi, job_id: str, workspace: Workspace
) -> None:
    outcome = await executor.run(make_spec(job_id, {"KWOK_RUN_FOR": "1500ms"}), workspace)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.exit_code == 0
    assert outcome.image == "ghcr.io/team/model:1"
    assert outcome.duration_s is not None and outcome.duration_s >= 1
    assert outcome.extra["job_name"] == job_name(job_id)
    # pods/log went API server -> kwok's kubelet port -> the CRI log file
    assert (workspace.logs_dir / "container.log").read_bytes() == KWOK_LOG
    assert run_info(workspace) == outcome
    assert sorted(p.name for p in (workspace.participant_dir / "input").iterdir()) == ["test.csv"]
    # the Job is deleted after the run, and the garbage collector takes its pod
    await wait_for("the Job and its pod to go", lambda: no_job_and_no_pod(admin, job_id))


async def test_nonzero_exit_is_container_exit_nonzero_with_the_log_tail(
    executor: Any, job_id: str, workspace: Workspace
) -> None:
    env = {"KWOK_OUTCOME": "exit", "KWOK_EXIT_CODE": "3", "KWOK_RUN_FOR": "300ms"}
    outcome = await executor.run(make_spec(job_id, env), workspace)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.CONTAINER_EXIT_NONZERO
    assert outcome.exit_code == 3
    assert outcome.error.logs == KWOK_LOG.decode()


async def test_oom_killed_is_container_oom(
    executor: Any, job_id: str, workspace: Workspace
) -> None:
    outcome = await executor.run(make_spec(job_id, {"KWOK_OUTCOME": "oom"}), workspace)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.CONTAINER_OOM
    assert outcome.oom_killed
    assert outcome.exit_code == 137


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("rpc error: code = NotFound desc = failed to pull: not found", ErrorCode.IMAGE_NOT_FOUND),
        ("dial tcp 10.0.0.1:443: i/o timeout", ErrorCode.IMAGE_PULL_FAILED),
    ],
    ids=["not-found", "unreachable"],
)
async def test_image_pull_failure(
    executor: Any, admin: KubeApi, job_id: str, workspace: Workspace, message: str, code: ErrorCode
) -> None:
    env = {"KWOK_OUTCOME": "image-pull", "KWOK_PULL_ERROR": message}
    outcome = await executor.run(make_spec(job_id, env), workspace)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.code is code
    assert message in outcome.error.message
    # no Job is left to back off forever
    await wait_for("the Job and its pod to go", lambda: no_job_and_no_pod(admin, job_id))


async def test_the_jobs_deadline_is_a_timeout(
    executor: Any, job_id: str, workspace: Workspace
) -> None:
    """activeDeadlineSeconds: the real Job controller fails the Job and deletes its pod."""
    started = time.monotonic()
    outcome = await executor.run(
        make_spec(job_id, {"KWOK_OUTCOME": "hang"}, time_limit=2), workspace
    )
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.TIMEOUT_ERROR, outcome.error
    assert outcome.timed_out
    assert time.monotonic() - started < 20  # the Job's deadline, not the executor's grace


async def test_cancel_deletes_the_running_job(
    executor: Any, admin: KubeApi, job_id: str, workspace: Workspace
) -> None:
    run = asyncio.create_task(executor.run(make_spec(job_id, {"KWOK_OUTCOME": "hang"}), workspace))
    await wait_for("the pod to run", lambda: running_pod(admin, job_id))
    assert await executor.cancel(job_id) is True
    outcome = await asyncio.wait_for(run, 30)
    assert outcome.status == "cancelled"
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.CANCELLED
    await wait_for("the Job and its pod to go", lambda: no_job_and_no_pod(admin, job_id))


def job_manifest(job_id: str, env: dict[str, str], **overrides: Any) -> Json:
    """The Job the executor would create for ``job_id``."""
    spec = make_spec(job_id, env, **overrides)
    assert spec.container is not None
    body = executor_settings("https://x", "t")
    body.pop("type")
    return build_job(spec, spec.container, KubernetesConfig.model_validate(body), job_id)


async def create_job_as_admin(admin: KubeApi, job_id: str, env: dict[str, str]) -> Json | None:
    """That Job, created by someone else (an earlier delivery, another worker)."""
    return await admin.create_job(job_manifest(job_id, env))


async def test_cleanup_leftovers_deletes_only_the_jobs_no_live_run_owns(
    executor: Any, admin: KubeApi
) -> None:
    ids = [new_job_id(name) for name in ("live", "dead-1", "dead-2")]
    for job_id in ids:
        assert await create_job_as_admin(admin, job_id, {"KWOK_OUTCOME": "hang"})
    try:
        assert await executor.cleanup_leftovers({ids[0]}) >= 2
        assert await admin.read_job(job_name(ids[0])) is not None
        for dead in ids[1:]:
            await wait_for("the dead Job to go", lambda d=dead: no_job_and_no_pod(admin, d))
    finally:
        await admin.delete_job(job_name(ids[0]), "Background")


async def test_a_redelivered_run_adopts_the_job_already_there_and_keeps_its_output(
    executor: Any, admin: KubeApi, job_id: str, workspace: Workspace
) -> None:
    await create_job_as_admin(admin, job_id, {"KWOK_RUN_FOR": "500ms"})
    workspace.output_dir.mkdir()
    (workspace.output_dir / "pred.csv").write_text("id,label\n1,a\n")  # written by that Job
    spec = make_spec(job_id, {"KWOK_RUN_FOR": "500ms"}, expected_outputs=["pred.csv"])
    outcome = await executor.run(spec, workspace)
    assert outcome.status == "succeeded", outcome.error
    assert (workspace.output_dir / "pred.csv").is_file()


async def test_a_job_of_another_id_under_the_same_name_is_not_adopted(
    executor: Any, admin: KubeApi, job_id: str, workspace: Workspace
) -> None:
    body = job_manifest(job_id, {"KWOK_OUTCOME": "hang"})
    body["metadata"]["annotations"]["autoscorer/job-id"] = "someone-else"
    await admin.create_job(body)
    try:
        with pytest.raises(AutoscorerError) as caught:
            await executor.run(make_spec(job_id), workspace)
        assert caught.value.code is ErrorCode.CONTAINER_CREATE_FAILED
        assert await admin.read_job(job_name(job_id)) is not None  # not the executor's to delete
    finally:
        await admin.delete_job(job_name(job_id), "Background")


async def test_cancel_deletes_a_job_another_worker_started_and_an_unknown_one_is_false(
    executor: Any, admin: KubeApi, job_id: str
) -> None:
    await create_job_as_admin(admin, job_id, {"KWOK_OUTCOME": "hang"})
    assert await executor.cancel(job_id) is True
    await wait_for("the Job and its pod to go", lambda: no_job_and_no_pod(admin, job_id))
    assert await executor.cancel(new_job_id("nobody")) is False


async def test_a_wrong_token_is_backend_unavailable(
    server: str, job_id: str, workspace: Workspace
) -> None:
    with pytest.raises(AutoscorerError) as caught:
        await run_with(executor_settings(server, "not-a-token"), make_spec(job_id), workspace)
    assert caught.value.code is ErrorCode.BACKEND_UNAVAILABLE
    assert caught.value.details["status"] == 401
    assert run_info(workspace).error is not None


async def test_a_watch_that_expires_with_410_gone_is_resumed_by_listing_again(
    server: str,
    token: str,
    admin: KubeApi,
    job_id: str,
    workspace: Workspace,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--watch-cache=false and a 5 s etcd compaction: a 1 s watch resumed from the pod's last
    resourceVersion, once other writes went past it and were compacted, gets 410 Gone."""
    spec = make_spec(job_id, {"KWOK_RUN_FOR": "16s"})
    caplog.set_level(logging.INFO, logger="services.executor.kubernetes.watch")
    settings = executor_settings(server, token, watch_timeout_s=1)
    run = asyncio.create_task(run_with(settings, spec, workspace))
    async with api_client() as client:
        core = k8s.CoreV1Api(client)
        name = f"churn-{job_id}"
        await core.create_namespaced_config_map(
            NAMESPACE, {"metadata": {"name": name}, "data": {"n": "0"}}
        )
        try:
            while not run.done():  # writes that move etcd's revision past the pod's
                await core.patch_namespaced_config_map(
                    name, NAMESPACE, {"data": {"n": str(time.monotonic())}}
                )
                await asyncio.sleep(0.5)
        finally:
            await core.delete_namespaced_config_map(name, NAMESPACE)
    outcome = await run
    assert outcome.status == "succeeded", outcome.error
    assert any("expired at resourceVersion" in r.getMessage() for r in caplog.records)


# --- RBAC: the executor's ServiceAccount may do what its Role says, nothing else ------------------


@pytest.mark.parametrize(
    "call",
    [
        "list-secrets",
        "create-pod",
        "exec-into-pod",
        "list-jobs-elsewhere",
        "delete-namespace",
        "patch-job",
    ],
)
async def test_the_executor_service_account_is_refused_outside_its_role(
    server: str, token: str, call: str
) -> None:
    pod = {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    async with api_client(token, server) as client:
        core, batch = k8s.CoreV1Api(client), k8s.BatchV1Api(client)
        calls = {
            "list-secrets": lambda: core.list_namespaced_secret(NAMESPACE),
            "create-pod": lambda: core.create_namespaced_pod(NAMESPACE, pod),
            "exec-into-pod": lambda: core.connect_post_namespaced_pod_exec(
                "x", NAMESPACE, command=["sh"]
            ),
            "list-jobs-elsewhere": lambda: batch.list_namespaced_job("default"),
            "delete-namespace": lambda: core.delete_namespace(NAMESPACE),
            "patch-job": lambda: batch.patch_namespaced_job("x", NAMESPACE, {"spec": {}}),
        }
        with pytest.raises(ApiException) as caught:
            await calls[call]()
    assert caught.value.status == 403


async def test_an_executor_pointed_outside_its_namespace_is_backend_unavailable(
    server: str, token: str, job_id: str, workspace: Workspace
) -> None:
    settings = executor_settings(server, token, namespace="default")
    with pytest.raises(AutoscorerError) as caught:
        await run_with(settings, make_spec(job_id), workspace)
    assert caught.value.code is ErrorCode.BACKEND_UNAVAILABLE
    assert caught.value.details["status"] == 403


# --- GPUs -----------------------------------------------------------------------------------------


async def test_a_gpu_job_runs_on_the_node_that_advertises_gpus(
    server: str, token: str, admin: KubeApi, job_id: str, workspace: Workspace
) -> None:
    spec = make_spec(job_id, {"KWOK_RUN_FOR": "3s"}, resources={"gpus": 1})
    run = asyncio.create_task(
        run_with(executor_settings(server, token, **GPU_SETTINGS), spec, workspace)
    )
    pod = await wait_for("the GPU pod to run", lambda: running_pod(admin, job_id))
    outcome = await run
    assert pod["spec"]["nodeName"] == GPU_NODE
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert outcome.status == "succeeded", outcome.error


async def test_a_gpu_job_no_node_can_hold_is_a_resource_error(
    server: str, token: str, job_id: str, workspace: Workspace
) -> None:
    """8 GPUs: the real scheduler leaves the pod Pending, the Job's deadline ends it."""
    settings = executor_settings(server, token, deadline_grace_s=5, **GPU_SETTINGS)
    outcome = await run_with(
        settings, make_spec(job_id, time_limit=2, resources={"gpus": 8}), workspace
    )
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.RESOURCE_ERROR, outcome.error
