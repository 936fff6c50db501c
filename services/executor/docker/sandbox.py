"""The container create body: a locked-down sandbox unless the operator's config loosens it.

What the participant sees: ``/workspace/input`` (the participant view, read-only, no ground
truth), ``/workspace/meta.json`` (read-only), ``/workspace/output`` (the size-capped tmpfs), a
size-capped ``/tmp``; everything else read-only. No network, no capabilities, no privilege
gain, a non-root user, pids / memory (no swap) / CPU limits, and GPUs only when both the job asks
and the config allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.executor.docker.config import DockerConfig
from services.executor.docker.logs import engine_log_config
from shared.errors import ErrorCode, execution_error
from shared.limits import SandboxLimits, requested_gpus
from shared.models import JobSpec, parse_memory

WORKDIR = "/workspace"
LABEL_JOB = "autoscorer.job_id"
LABEL_EXECUTOR = "autoscorer.executor"
LABEL_OUTPUT_MOUNT = "autoscorer.output_mount"
LABEL_INSTANCE = "autoscorer.instance"
EXECUTOR_NAME = "docker"
CONTAINER_TMP = "/tmp"  # noqa: S108 - the container's own size-capped tmpfs, not the host's


@dataclass(frozen=True, slots=True)
class SandboxPaths:
    input_dir: Path  # the participant view's input/
    meta_json: Path  # the participant view's meta.json
    output_dir: Path  # the output tmpfs mount point


def container_name(job_id: str) -> str:
    return f"autoscorer-{job_id}"


def own_labels(config: DockerConfig) -> dict[str, str]:
    """The labels that mark a container as this executor's (what cleanup_leftovers looks for)."""
    labels = {LABEL_EXECUTOR: EXECUTOR_NAME}
    if config.instance is not None:
        labels[LABEL_INSTANCE] = config.instance
    return labels


def check_policy(spec: JobSpec, config: DockerConfig) -> None:
    """Refuse jobs that ask for more than the operator allows (organiser errors, never retried)."""
    gpus = requested_gpus(spec)
    if gpus and not config.allow_gpus:
        raise execution_error(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"the job asks for {gpus} GPU(s) but this executor has allow_gpus=false",
            gpus=gpus,
        )
    policy = spec.container.network_policy if spec.container else "none"
    if policy not in ("none", config.network):
        raise execution_error(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"the job asks for network {policy!r} but this executor allows only {config.network!r}",
            network=policy,
        )


def create_body(
    spec: JobSpec, config: DockerConfig, image_id: str, paths: SandboxPaths
) -> dict[str, Any]:
    container = spec.container
    labels = {
        **config.labels,
        **own_labels(config),
        LABEL_JOB: spec.job_id,
        LABEL_OUTPUT_MOUNT: str(paths.output_dir),
    }
    body: dict[str, Any] = {
        "Image": image_id,
        "User": config.user,
        "WorkingDir": WORKDIR,
        "Env": [f"{k}={v}" for k, v in _env(spec, config).items()],
        "Labels": labels,
        "HostConfig": host_config(spec, config, paths),
    }
    if container and container.cmd:
        body["Cmd"] = container.cmd
    return body


def host_config(spec: JobSpec, config: DockerConfig, paths: SandboxPaths) -> dict[str, Any]:
    memory = spec.resources.memory_bytes
    shm = spec.container.shm_size if spec.container and spec.container.shm_size else config.shm_size
    host: dict[str, Any] = {
        "NetworkMode": config.network,
        "ReadonlyRootfs": True,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "Privileged": False,
        "PidsLimit": config.pids_limit,
        "Memory": memory,
        "MemorySwap": memory,
        "NanoCpus": int(spec.resources.cpu * 1e9),
        "ShmSize": parse_memory(shm),
        "Tmpfs": {CONTAINER_TMP: tmp_options(config)},
        "Ulimits": ulimits(config.limits),
        "Mounts": _mounts(config, paths),
        "LogConfig": engine_log_config(parse_memory(config.log_limit)),
        "AutoRemove": False,  # we remove it ourselves, after reading its state
        "RestartPolicy": {"Name": "no"},
        "IpcMode": "private",
    }
    gpus = requested_gpus(spec)
    if gpus:
        host["DeviceRequests"] = [{"Driver": "", "Count": gpus, "Capabilities": [["gpu"]]}]
    return host


def tmp_options(config: DockerConfig) -> str:
    """``/tmp``: writable, size-capped, and nothing on it can be executed or gain privilege."""
    return f"rw,noexec,nosuid,nodev,mode=1777,size={parse_memory(config.tmp_size)}"


def ulimits(limits: SandboxLimits) -> list[dict[str, Any]]:
    """Open files and file size from the operator's limits; core dumps always off."""
    pairs = {"nofile": limits.nofile, "core": 0, "fsize": limits.fsize_bytes}
    return [{"Name": name, "Soft": value, "Hard": value} for name, value in pairs.items()]


def _env(spec: JobSpec, config: DockerConfig) -> dict[str, str]:
    """The job's variables, then the operator's (which win)."""
    return {**(spec.container.env if spec.container else {}), **config.env}


def _mounts(config: DockerConfig, paths: SandboxPaths) -> list[dict[str, Any]]:
    mounts = [
        _bind(paths.input_dir, f"{WORKDIR}/input", read_only=True),
        _bind(paths.meta_json, f"{WORKDIR}/meta.json", read_only=True),
        _bind(paths.output_dir, f"{WORKDIR}/output", read_only=False),
    ]
    mounts += [_bind(Path(m.source), m.target, read_only=m.read_only) for m in config.extra_mounts]
    return mounts


def _bind(source: Path, target: str, *, read_only: bool) -> dict[str, Any]:
    return {
        "Type": "bind",
        "Source": str(source),
        "Target": target,
        "ReadOnly": read_only,
        "BindOptions": {"Propagation": "rprivate"},
    }
