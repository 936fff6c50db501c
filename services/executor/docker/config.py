"""Settings of the Docker executor: every knob has a safe default; loosening is explicit."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.limits import SandboxLimits
from shared.models import Quantity

DEFAULT_SOCKET = "/var/run/docker.sock"
_USER_RE = re.compile(r"^(\d+)(?::(\d+))?$")


class ExtraMount(BaseModel):
    """A host path the operator wants every participant container to see (read-only by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    target: str = Field(min_length=1)
    read_only: bool = True

    @field_validator("source", "target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("mount paths must be absolute")
        return value


class DockerConfig(BaseModel):
    """The ``{"type": "docker", ...}`` section of the executor settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    docker_host: str | None = Field(
        None, description="unix:///path or tcp://host:port; None: $DOCKER_HOST, then the socket"
    )
    pull_policy: Literal["always", "ifnotpresent", "never"] = "ifnotpresent"
    allowed_images: list[str] | None = Field(
        None, description="fnmatch patterns on the normalised reference; None allows any image"
    )
    image_archive: str | None = Field(
        None, description="an image.tar(.gz) to load instead of pulling; default: the workspace's"
    )
    user: str = Field("65534:65534", description="uid[:gid] the participant runs as; never root")
    network: str = Field("none", description="NetworkMode; anything but 'none' is an opt-in")
    pids_limit: int = Field(256, ge=16)
    tmp_size: Quantity = "64Mi"
    shm_size: Quantity = "64Mi"
    log_limit: Quantity = Field("10Mi", description="bytes kept in logs/container.log")
    output_limit: Quantity = Field("512Mi", description="bytes the run may write in output/")
    output_max_files: int = Field(10_000, ge=1, description="files and directories in output/")
    allow_gpus: bool = False
    env: dict[str, str] = Field(default_factory=dict, description="added to every container")
    extra_mounts: list[ExtraMount] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict, description="added to every container")
    instance: str | None = Field(
        None, description="executors sharing one engine: cleanup_leftovers touches only its own"
    )
    max_time_limit_s: int | None = Field(None, gt=0, description="caps the job's own time_limit")
    api_timeout_s: float = Field(60.0, gt=0, description="per Docker API call (not waits or pulls)")
    pull_timeout_s: float = Field(900.0, gt=0, description="per pull or archive load")
    collect_stats: bool = Field(True, description="sample peak memory and CPU while running")
    limits: SandboxLimits = Field(
        default_factory=SandboxLimits,
        description="operator caps (checked before the run), ulimits, organiser ground truth",
    )

    @field_validator("user")
    @classmethod
    def _non_root(cls, value: str) -> str:
        match = _USER_RE.match(value)
        if match is None:
            raise ValueError("user must be numeric uid[:gid] (names depend on the image)")
        if int(match.group(1)) == 0 or (match.group(2) is not None and int(match.group(2)) == 0):
            raise ValueError("participant containers never run as root (uid or gid 0)")
        return value

    @model_validator(mode="after")
    def _no_docker_socket(self) -> DockerConfig:
        sockets = {_real(DEFAULT_SOCKET), _real("/run/docker.sock")}
        if self.docker_host and self.docker_host.startswith("unix://"):
            sockets.add(_real(self.docker_host.removeprefix("unix://")))
        for mount in self.extra_mounts:
            source = _real(mount.source)
            if Path(source).name == "docker.sock" or any(_covers(source, s) for s in sockets):
                raise ValueError(f"mounting the Docker socket is refused: {mount.source}")
        return self

    @property
    def uid_gid(self) -> tuple[int, int]:
        match = _USER_RE.match(self.user)
        assert match is not None  # checked by the validator
        uid = int(match.group(1))
        return uid, int(match.group(2) or uid)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _covers(source: str, socket: str) -> bool:
    return socket == source or socket.startswith(source.rstrip("/") + "/")
