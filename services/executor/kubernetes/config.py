"""Settings of the Kubernetes executor: where the cluster is, how to log in, how jobs look."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from shared.limits import SandboxLimits
from shared.models import Quantity


class InClusterAuth(BaseModel):
    """The service account token and CA that Kubernetes mounts into the worker's pod."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["in-cluster"] = "in-cluster"


class KubeconfigAuth(BaseModel):
    """A kubeconfig file (``~/.kube/config`` when ``path`` is empty) and optionally a context."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["kubeconfig"]
    path: str | None = None
    context: str | None = None


class TokenAuth(BaseModel):
    """A bearer token for ``host``; TLS verified against ``ca_file`` unless ``insecure``."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["token"]
    host: str = Field(pattern=r"^https?://")
    token: SecretStr
    ca_file: str | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _tls(self) -> TokenAuth:
        if self.insecure and self.ca_file:
            raise ValueError("set either ca_file or insecure, not both")
        if self.host.startswith("http://") and not self.insecure:
            raise ValueError("plain http sends the token in clear: use https, or insecure: true")
        return self


Auth = Annotated[InClusterAuth | KubeconfigAuth | TokenAuth, Field(discriminator="mode")]


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class KubernetesConfig(BaseModel):
    """``{"type": "kubernetes", ...}`` in the executor settings."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = "autoscorer"
    auth: Auth = Field(default_factory=InClusterAuth)
    pvc_name: str = Field("autoscorer-workspaces", min_length=1)
    workspace_root: str = Field(
        "/data/workspaces",
        description="where the worker mounts the PVC; a workspace's subPath is its path below this",
    )
    pvc_sub_path: str = Field("", description="prefix inside the PVC that workspace_root maps to")
    image_pull_secrets: list[str] = Field(default_factory=list)
    service_account: str | None = Field(
        None, description="for the job pods; its token is never mounted"
    )
    run_as_user: int = Field(65534, ge=1)
    run_as_group: int = Field(65534, ge=1)
    tmp_size: Quantity = "256Mi"
    ttl_seconds_after_finished: int = Field(
        600, ge=60, description="reaps Jobs a dead worker left; must outlast reading the log"
    )
    fs_group: int | None = Field(
        None,
        ge=1,
        description="pod fsGroup; unset by default: on a shared PVC the kubelet may "
        "chown the whole volume (output/ is made world-writable instead)",
    )
    allow_gpus: bool = False
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    gpu_node_selector: dict[str, str] = Field(default_factory=dict)
    gpu_tolerations: list[Toleration] = Field(default_factory=list)
    delete_propagation: Literal["Background", "Foreground"] = "Background"
    watch_timeout_s: int = Field(60, ge=1, description="server-side timeout of one watch request")
    request_timeout_s: float = Field(30.0, gt=0, description="for every non-watch API call")
    deadline_grace_s: float = Field(
        120.0, ge=0, description="how long past time_limit to wait for the Job's own deadline"
    )
    log_cap_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    output_cap_bytes: int = Field(
        1024**3, gt=0, description="checked after the run: output/ lives on the PVC, unbounded"
    )
    limits: SandboxLimits = Field(
        default_factory=SandboxLimits,
        description="operator caps (checked before the Job is created), organiser ground truth",
    )

    @field_validator("workspace_root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not PurePosixPath(value).is_absolute():
            raise ValueError("workspace_root must be an absolute path")
        return value

    @field_validator("pvc_sub_path")
    @classmethod
    def _relative(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError("pvc_sub_path must be a relative path without '..'")
        return value
