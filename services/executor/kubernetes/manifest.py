"""The batch/v1 Job one participant run becomes, as a plain JSON-ready dict.

Every pod runs under the *restricted* Pod Security Standard: non-root, no privilege escalation,
all capabilities dropped, the runtime's default seccomp profile, a read-only root file system
with a size-limited ``/tmp``, and no service account token. The participant sees only its
workspace's participant view (input without ground truth, meta.json) and its output directory.
"""

from __future__ import annotations

from typing import Any

from services.executor.kubernetes.config import KubernetesConfig, Toleration
from services.executor.kubernetes.names import (
    CONTAINER_NAME,
    JOB_ID_ANNOTATION,
    job_labels,
    job_name,
    normalise_image,
)
from shared.models import ContainerSpec, JobSpec, parse_memory

WORKSPACE_VOLUME = "workspace"
TMP_VOLUME = "tmp"
SHM_VOLUME = "shm"
PARTICIPANT_VIEW = ".autoscorer/participant"


def cpu_quantity(cpu: float) -> str:
    return f"{round(cpu * 1000)}m"


def memory_quantity(memory: str) -> str:
    """Bytes, because Docker-style ``1g`` is no Kubernetes quantity (there ``1G`` is decimal)."""
    return str(parse_memory(memory))


def gpu_count(spec: JobSpec) -> int:
    container = spec.container
    if container is not None and container.gpus is not None:
        return container.gpus
    return spec.resources.gpus


def resources(spec: JobSpec, config: KubernetesConfig) -> dict[str, Any]:
    amounts: dict[str, str] = {
        "cpu": cpu_quantity(spec.resources.cpu),
        "memory": memory_quantity(spec.resources.memory),
    }
    gpus = gpu_count(spec)
    if gpus > 0:
        amounts[config.gpu_resource] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(config: KubernetesConfig) -> dict[str, Any]:
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": config.run_as_user,
        "runAsGroup": config.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if config.fs_group is not None:
        context.update(fsGroup=config.fs_group, fsGroupChangePolicy="OnRootMismatch")
    return context


def volume_mounts(sub_path: str, container: ContainerSpec) -> list[dict[str, Any]]:
    view = f"{sub_path}/{PARTICIPANT_VIEW}"
    mounts: list[dict[str, Any]] = [
        {
            "name": WORKSPACE_VOLUME,
            "mountPath": "/workspace/input",
            "subPath": f"{view}/input",
            "readOnly": True,
        },
        {
            "name": WORKSPACE_VOLUME,
            "mountPath": "/workspace/meta.json",
            "subPath": f"{view}/meta.json",
            "readOnly": True,
        },
        {
            "name": WORKSPACE_VOLUME,
            "mountPath": "/workspace/output",
            "subPath": f"{sub_path}/output",
            "readOnly": False,
        },
        {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
    ]
    if container.shm_size:
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})  # noqa: S108 - emptyDir
    return mounts


def volumes(config: KubernetesConfig, container: ContainerSpec) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": config.pvc_name}},
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": memory_quantity(config.tmp_size)}},
    ]
    if container.shm_size:
        items.append(
            {
                "name": SHM_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": memory_quantity(container.shm_size)},
            }
        )
    return items


def participant_container(
    spec: JobSpec, container: ContainerSpec, config: KubernetesConfig, sub_path: str
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": normalise_image(container.image),
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": k, "value": v} for k, v in sorted(container.env.items())],
        "workingDir": container.workdir,
        "resources": resources(spec, config),
        "securityContext": container_security_context(),
        "volumeMounts": volume_mounts(sub_path, container),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if container.cmd:
        body["args"] = list(container.cmd)  # like Docker's CMD: the image's entrypoint still runs
    return body


def scheduling(spec: JobSpec, config: KubernetesConfig) -> dict[str, Any]:
    selector = dict(config.node_selector)
    tolerations: list[Toleration] = list(config.tolerations)
    if gpu_count(spec) > 0:
        selector.update(config.gpu_node_selector)
        tolerations.extend(config.gpu_tolerations)
    placed: dict[str, Any] = {}
    if selector:
        placed["nodeSelector"] = selector
    if tolerations:
        placed["tolerations"] = [t.model_dump(exclude_none=True) for t in tolerations]
    return placed


def pod_spec(
    spec: JobSpec, container: ContainerSpec, config: KubernetesConfig, sub_path: str
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(config),
        "containers": [participant_container(spec, container, config, sub_path)],
        "volumes": volumes(config, container),
        **scheduling(spec, config),
    }
    if config.image_pull_secrets:
        body["imagePullSecrets"] = [{"name": name} for name in config.image_pull_secrets]
    if config.service_account:
        body["serviceAccountName"] = config.service_account
    return body


def build_job(
    spec: JobSpec, container: ContainerSpec, config: KubernetesConfig, sub_path: str
) -> dict[str, Any]:
    """The Job manifest for ``spec``, whose workspace is ``sub_path`` inside the PVC."""
    labels = job_labels(spec.job_id)
    metadata = {
        "name": job_name(spec.job_id),
        "namespace": config.namespace,
        "labels": labels,
        "annotations": {JOB_ID_ANNOTATION: spec.job_id},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.time_limit,
            "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": labels, "annotations": {JOB_ID_ANNOTATION: spec.job_id}},
                "spec": pod_spec(spec, container, config, sub_path),
            },
        },
    }
