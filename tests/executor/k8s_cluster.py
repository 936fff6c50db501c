"""The real Kubernetes control plane the deploy tests use (scripts/provision/kubernetes.sh).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler 1.36 run on 127.0.0.1; kwok
plays the kubelet of two nodes and moves pods through the stages of deploy/k8s-cluster/kwok.yaml,
chosen per pod by its env (``KWOK_OUTCOME``, ``KWOK_RUN_FOR``...). Nothing here is faked: what
kwok cannot give (a real container, a real exit code, a real log) is listed in
docs/EXECUTORS_KUBERNETES.md.

When the control plane is absent the tests FAIL with the command to run: the test command
(scripts/test.sh) builds and starts it before the deploy tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from shared.models import JobSpec
from shared.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("AUTOSCORER_K8S_STATE", "/tmp/autoscorer-k8s"))
CACHE = Path(os.environ.get("AUTOSCORER_CACHE", Path.home() / ".cache" / "autoscorer"))
KUBECONFIG = STATE / "admin.kubeconfig"
CA_FILE = STATE / "pki" / "ca.crt"
WORKSPACES = STATE / "workspaces"  # the hostPath of the PV the workspace PVC binds to
NAMESPACE = "autoscorer"
SERVICE_ACCOUNT = "autoscorer-executor"
GPU_NODE = "kwok-gpu-0"
CPU_NODE = "kwok-node-0"
# the CRI-format file kwok serves as every pod's log (written by scripts/provision/kubernetes.sh)
KWOK_LOG = b"hello from the kwok node\nkwok runs no program: this log is fixed\n"

START_HINT = (
    "bash scripts/provision/kubernetes-build.sh && bash scripts/provision/kubernetes.sh "
    "(scripts/test.sh runs both before the deploy tests)"
)

Json = dict[str, Any]


def kubectl_binary() -> str:
    """The kubectl built with the control plane (same version), else the one on the PATH."""
    built = CACHE / "k8s-cluster" / "current" / "kubectl"
    if built.is_file():
        return str(built)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(f"no kubectl: neither {built} nor one on the PATH; run {START_HINT}")
    return found


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run kubectl as the cluster admin; with ``check`` a failure fails the test with its output."""
    proc = subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(KUBECONFIG), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def require_control_plane() -> str:
    """The API server's URL; fails (never skips) when the control plane is not running."""
    if not KUBECONFIG.is_file():
        pytest.fail(f"no Kubernetes control plane: {KUBECONFIG} is missing; run {START_HINT}")
    ready = kubectl("get", "--raw", "/readyz", check=False)
    if ready.returncode != 0:
        pytest.fail(
            f"the Kubernetes API server is not ready ({ready.stderr.strip()}); run {START_HINT}"
        )
    config = yaml.safe_load(KUBECONFIG.read_text(encoding="utf-8"))
    server: str = config["clusters"][0]["cluster"]["server"]
    return server


def apply_deploy_manifests() -> subprocess.CompletedProcess[str]:
    """``kubectl apply -k deploy/k8s`` plus the Secret the operator creates (docs/DEPLOYMENT.md)."""
    applied = kubectl("apply", "-k", str(REPO / "deploy" / "k8s"))
    secret = kubectl(
        "create",
        "secret",
        "generic",
        "autoscorer-secrets",
        "-n",
        NAMESPACE,
        "--from-literal=bus-url=amqp://autoscorer:secret@rabbitmq:5672/",
        "--from-literal=store-url=mongodb://mongo:27017/autoscorer",
        "--from-literal=api-keys=test-key",
        "--from-literal=callback-secret=test-callback-secret",
        "--dry-run=client",
        "-o",
        "yaml",
    ).stdout
    kubectl("apply", "-f", "-", stdin=secret)
    return applied


def service_account_token() -> str:
    """A TokenRequest token of the executor's ServiceAccount (deploy/k8s/executor-rbac.yaml)."""
    return kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration", "2h"
    ).stdout.strip()


def executor_settings(server: str, token: str, **overrides: Any) -> Json:
    """``{"type": "kubernetes", ...}`` as the executor's ServiceAccount, on the real API."""
    return {
        "type": "kubernetes",
        "namespace": NAMESPACE,
        "auth": {"mode": "token", "host": server, "token": token, "ca_file": str(CA_FILE)},
        "pvc_name": "autoscorer-workspaces",
        "workspace_root": str(WORKSPACES),
        "ttl_seconds_after_finished": 60,
        "watch_timeout_s": 10,
        "request_timeout_s": 10,
        "deadline_grace_s": 30,
        **overrides,
    }


def new_job_id(label: str) -> str:
    return f"k8s-{label}-{uuid.uuid4().hex[:8]}"


def make_spec(job_id: str, env: dict[str, str] | None = None, **overrides: Any) -> JobSpec:
    body: Json = {
        "job_id": job_id,
        "scorer": "classification_f1",
        "time_limit": 60,
        "resources": {"cpu": 0.5, "memory": "256Mi"},
        "container": {
            "image": "ghcr.io/team/model:1",
            "cmd": ["python", "run.py"],
            "env": env or {},
        },
    }
    body.update(overrides)
    return JobSpec.model_validate(body)


def make_workspace(job_id: str) -> Workspace:
    """A workspace below the PV's hostPath, as the gateway would have written it."""
    root = WORKSPACES / job_id
    (root / "input").mkdir(parents=True)
    (root / "input" / "test.csv").write_text("id\n1\n", encoding="utf-8")
    (root / "input" / "gt.csv").write_text("id,label\n1,a\n", encoding="utf-8")
    (root / "meta.json").write_text(make_spec(job_id).model_dump_json(), encoding="utf-8")
    return Workspace.at(root)


async def client_configuration(token: str | None = None, server: str | None = None) -> Any:
    """The admin's configuration (kubeconfig), or a bearer token's for ``server``."""
    configuration = k8s.Configuration()
    if token is None:
        await k8s_config.load_kube_config(
            config_file=str(KUBECONFIG), client_configuration=configuration, persist_config=False
        )
        return configuration
    configuration.host = server
    configuration.ssl_ca_cert = str(CA_FILE)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return configuration


@asynccontextmanager
async def api_client(token: str | None = None, server: str | None = None) -> AsyncIterator[Any]:
    client = k8s.ApiClient(await client_configuration(token, server))
    try:
        yield client
    finally:
        await client.close()
