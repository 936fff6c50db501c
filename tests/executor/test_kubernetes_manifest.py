"""The Job manifest the Kubernetes executor sends, as recorded by the HTTP-level fake API.

No Kubernetes API server runs here: tests/executor/k8s_fake.py records the body the REAL
kubernetes-asyncio client POSTs. These tests check that body field by field; whether a real
cluster's admission (Pod Security "restricted") accepts it is not verified here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.executor.kubernetes.config import KubernetesConfig
from services.executor.kubernetes.manifest import build_job, cpu_quantity, memory_quantity
from services.executor.kubernetes.names import job_name
from services.executor.registry import create_executor
from shared.models import JobSpec
from shared.workspace import Workspace
from tests.executor.k8s_fake import FakeCluster, executor_settings, serve

JOB_ID = "job-manifest-1"


def make_spec(**overrides: Any) -> JobSpec:
    body: dict[str, Any] = {
        "job_id": JOB_ID,
        "scorer": "classification_f1",
        "time_limit": 900,
        "resources": {"cpu": 2, "memory": "1g"},
        "container": {
            "image": "team/model",
            "cmd": ["python", "/app/run.py"],
            "env": {"B": "2", "A": "1"},
            "shm_size": "64Mi",
        },
    }
    body.update(overrides)
    return JobSpec.model_validate(body)


async def recorded_job(tmp_path: Path, spec: JobSpec, **config: Any) -> dict[str, Any]:
    """Run ``spec`` through the executor against the fake; return the Job manifest it POSTed."""
    cluster = FakeCluster()
    root = tmp_path / "pvc"
    ws_root = root / "2026" / spec.job_id
    (ws_root / "input").mkdir(parents=True)
    (ws_root / "meta.json").write_text(spec.model_dump_json())
    async with serve(cluster) as url:
        executor = create_executor(executor_settings(url, str(root), **config))
        try:
            outcome = await executor.run(spec, Workspace.at(ws_root))
        finally:
            await executor.close()
    assert outcome.status == "succeeded"
    assert len(cluster.created) == 1
    return cluster.created[0]


@pytest.fixture
async def job(tmp_path: Path) -> dict[str, Any]:
    return await recorded_job(tmp_path, make_spec())


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def container_of(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_of(job)["containers"]
    return dict(container)


def test_job_runs_once_with_deadline_and_ttl(job: dict[str, Any]) -> None:
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == job_name(JOB_ID)
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 900
    assert job["spec"]["ttlSecondsAfterFinished"] == 300
    assert pod_of(job)["restartPolicy"] == "Never"


def test_labels_on_job_and_pod(job: dict[str, Any]) -> None:
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["autoscorer.job_id"] == JOB_ID
        assert labels["app.kubernetes.io/managed-by"] == "autoscorer"
        assert labels["app.kubernetes.io/component"] == "participant-run"
    assert job["metadata"]["annotations"]["autoscorer/job-id"] == JOB_ID


def test_pod_security_is_the_restricted_profile(job: dict[str, Any]) -> None:
    pod = pod_of(job)
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65534
    assert pod["securityContext"]["runAsGroup"] == 65534
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod
    assert "hostPID" not in pod
    assert "fsGroup" not in pod["securityContext"]  # no recursive chown of the shared PVC


def test_fs_group_when_configured_changes_ownership_only_on_mismatch() -> None:
    spec = make_spec()
    job = build_job(spec, spec.container, KubernetesConfig(fs_group=2000), "ws/x")  # type: ignore[arg-type]
    context = pod_of(job)["securityContext"]
    assert context["fsGroup"] == 2000
    assert context["fsGroupChangePolicy"] == "OnRootMismatch"


def test_container_security_context(job: dict[str, Any]) -> None:
    context = container_of(job)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_requests_equal_limits_from_resources(job: dict[str, Any]) -> None:
    resources = container_of(job)["resources"]
    expected = {"cpu": "2000m", "memory": str(1024**3)}  # Docker-style 1g is 1 GiB
    assert resources == {"requests": expected, "limits": expected}


def test_workspace_mounts_hide_ground_truth_and_the_real_input(job: dict[str, Any]) -> None:
    mounts = {m["mountPath"]: m for m in container_of(job)["volumeMounts"]}
    base = f"ws/2026/{JOB_ID}"
    assert mounts["/workspace/input"] == {
        "name": "workspace",
        "mountPath": "/workspace/input",
        "subPath": f"{base}/.autoscorer/participant/input",
        "readOnly": True,
    }
    assert mounts["/workspace/meta.json"]["subPath"] == f"{base}/.autoscorer/participant/meta.json"
    assert mounts["/workspace/meta.json"]["readOnly"] is True
    assert mounts["/workspace/output"]["subPath"] == f"{base}/output"
    assert mounts["/workspace/output"]["readOnly"] is False
    assert not any(m.get("subPath") == f"{base}/input" for m in mounts.values())


def test_volumes_are_the_pvc_and_size_limited_scratch(job: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod_of(job)["volumes"]}
    assert volumes["workspace"] == {
        "name": "workspace",
        "persistentVolumeClaim": {"claimName": "autoscorer-workspaces"},
    }
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": str(256 * 1024**2)}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": str(64 * 1024**2)}
    mounts = {m["mountPath"]: m["name"] for m in container_of(job)["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"
    assert mounts["/dev/shm"] == "shm"


def test_image_command_env_and_pull_secrets(job: dict[str, Any]) -> None:
    container = container_of(job)
    assert container["image"] == "team/model:latest"
    assert container["args"] == ["python", "/app/run.py"]
    assert "command" not in container  # the image's entrypoint still runs, as with Docker's CMD
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert container["workingDir"] == "/workspace"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod_of(job)["imagePullSecrets"] == [{"name": "registry-secret"}]


def test_no_gpu_and_no_placement_by_default(job: dict[str, Any]) -> None:
    assert "nvidia.com/gpu" not in container_of(job)["resources"]["limits"]
    assert "nodeSelector" not in pod_of(job)
    assert "tolerations" not in pod_of(job)


async def test_gpu_job_asks_for_gpus_and_lands_on_gpu_nodes(tmp_path: Path) -> None:
    spec = make_spec(resources={"cpu": 4, "memory": "8Gi", "gpus": 2})
    job = await recorded_job(
        tmp_path,
        spec,
        allow_gpus=True,
        gpu_node_selector={"nvidia.com/gpu.present": "true"},
        gpu_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    resources = container_of(job)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "2"
    assert resources["requests"]["nvidia.com/gpu"] == "2"
    assert pod_of(job)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_of(job)["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_container_gpus_override_resources() -> None:
    spec = make_spec(resources={"gpus": 1}, container={"image": "m", "gpus": 3})
    config = KubernetesConfig(allow_gpus=True)
    job = build_job(spec, spec.container, config, "ws/x")  # type: ignore[arg-type]
    assert container_of(job)["resources"]["limits"]["nvidia.com/gpu"] == "3"


def test_optional_service_account_and_no_shm_without_shm_size() -> None:
    spec = make_spec(container={"image": "m"})
    config = KubernetesConfig(service_account="participant-runner")
    job = build_job(spec, spec.container, config, "ws/x")  # type: ignore[arg-type]
    assert pod_of(job)["serviceAccountName"] == "participant-runner"
    assert pod_of(job)["automountServiceAccountToken"] is False
    assert {v["name"] for v in pod_of(job)["volumes"]} == {"workspace", "tmp"}
    assert "args" not in container_of(job)


@pytest.mark.parametrize(("cpu", "expected"), [(1, "1000m"), (0.25, "250m"), (1.5, "1500m")])
def test_cpu_quantity(cpu: float, expected: str) -> None:
    assert cpu_quantity(cpu) == expected


@pytest.mark.parametrize(
    ("memory", "expected"), [("512Mi", 512 * 1024**2), ("1G", 10**9), ("2g", 2 * 1024**3)]
)
def test_memory_quantity_is_bytes(memory: str, expected: int) -> None:
    assert memory_quantity(memory) == str(expected)
