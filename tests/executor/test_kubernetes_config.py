"""Settings of the Kubernetes executor and how auth modes become a client configuration.

No Kubernetes API server runs here; auth is checked only as far as the client configuration the
executor builds (and, in test_kubernetes_executor.py, the bearer token the HTTP-level fake sees).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.executor.kubernetes.backend import BACKEND, KubernetesExecutor
from services.executor.kubernetes.client import build_api_client, token_configuration
from services.executor.kubernetes.config import KubeconfigAuth, KubernetesConfig, TokenAuth
from services.executor.registry import create_executor, validate_backend_config
from shared.errors import AutoscorerError, ErrorCode


def test_defaults_are_in_cluster_and_safe() -> None:
    config = KubernetesConfig()
    assert config.auth.mode == "in-cluster"
    assert config.allow_gpus is False
    assert config.run_as_user == 65534
    assert config.delete_propagation == "Background"


def test_registry_builds_the_kubernetes_backend_without_touching_a_cluster() -> None:
    executor = create_executor({"type": "kubernetes", "namespace": "scoring"})
    assert isinstance(executor, KubernetesExecutor)
    assert executor.name == "kubernetes"
    assert BACKEND.config_model is KubernetesConfig


@pytest.mark.parametrize(
    "body",
    [
        {"surprise": 1},
        {"auth": {"mode": "token", "host": "https://k8s:6443"}},  # no token
        {"auth": {"mode": "token", "host": "http://k8s:6443", "token": "t"}},  # clear text
        {
            "auth": {
                "mode": "token",
                "host": "https://k8s:6443",
                "token": "t",
                "insecure": True,
                "ca_file": "/ca.crt",
            }
        },
        {"auth": {"mode": "password"}},
        {"workspace_root": "relative/path"},
        {"pvc_sub_path": "../escape"},
        {"tmp_size": "lots"},
        {"delete_propagation": "Orphan"},
        {"ttl_seconds_after_finished": 0},  # the Job would vanish before its log is read
    ],
)
def test_invalid_settings_are_config_errors(body: dict[str, Any]) -> None:
    with pytest.raises(AutoscorerError) as caught:
        validate_backend_config({"type": "kubernetes", **body})
    assert caught.value.code is ErrorCode.CONFIG_VALIDATION_ERROR


def test_token_is_secret_in_dumps_and_reprs() -> None:
    config = KubernetesConfig.model_validate(
        {"auth": {"mode": "token", "host": "https://k8s:6443", "token": "s3cret"}}
    )
    assert "s3cret" not in repr(config)
    assert "s3cret" not in config.model_dump_json()


def test_token_auth_configures_bearer_header_and_tls() -> None:
    auth = TokenAuth(
        mode="token",
        host="https://k8s:6443/",
        token="abc",  # type: ignore[arg-type]
        ca_file="/etc/ca.crt",
    )
    configuration = token_configuration(auth)
    assert configuration.host == "https://k8s:6443"
    assert configuration.api_key == {"BearerToken": "abc"}
    assert configuration.api_key_prefix == {"BearerToken": "Bearer"}
    assert configuration.verify_ssl is True
    assert configuration.ssl_ca_cert == "/etc/ca.crt"


async def test_kubeconfig_auth_reads_the_named_context(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("""
apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: dev
  context: {cluster: dev, user: dev}
- name: prod
  context: {cluster: prod, user: prod}
clusters:
- name: dev
  cluster: {server: "https://dev.example:6443", insecure-skip-tls-verify: true}
- name: prod
  cluster: {server: "https://prod.example:6443", insecure-skip-tls-verify: true}
users:
- name: dev
  user: {token: dev-token}
- name: prod
  user: {token: prod-token}
""")
    config = KubernetesConfig(
        auth=KubeconfigAuth(mode="kubeconfig", path=str(kubeconfig), context="prod")
    )
    client = await build_api_client(config)
    try:
        assert client.configuration.host == "https://prod.example:6443"
        assert client.configuration.api_key["BearerToken"] == "Bearer prod-token"
    finally:
        await client.close()


async def test_missing_in_cluster_credentials_are_backend_unavailable() -> None:
    # this machine is no pod: the service account files are absent
    with pytest.raises(AutoscorerError) as caught:
        await build_api_client(KubernetesConfig())
    assert caught.value.code is ErrorCode.BACKEND_UNAVAILABLE


def test_bad_config_values_are_rejected_by_the_model() -> None:
    with pytest.raises(ValidationError):
        KubernetesConfig(watch_timeout_s=0)
