"""Build a kubernetes-asyncio ``ApiClient`` from the configured auth, and classify its errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException

from services.executor.kubernetes.config import (
    InClusterAuth,
    KubeconfigAuth,
    KubernetesConfig,
    TokenAuth,
)
from shared.errors import AutoscorerError, ErrorCode, execution_error


def token_configuration(auth: TokenAuth) -> Any:
    configuration = k8s.Configuration(host=auth.host.rstrip("/"))
    configuration.api_key = {"BearerToken": auth.token.get_secret_value()}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    configuration.verify_ssl = not auth.insecure
    configuration.ssl_ca_cert = auth.ca_file
    return configuration


async def load_configuration(config: KubernetesConfig) -> Any:
    auth = config.auth
    if isinstance(auth, TokenAuth):
        return token_configuration(auth)
    configuration = k8s.Configuration()
    if isinstance(auth, KubeconfigAuth):
        await k8s_config.load_kube_config(
            config_file=auth.path,
            context=auth.context,
            client_configuration=configuration,
            persist_config=False,
        )
    elif isinstance(auth, InClusterAuth):
        # reads the mounted token and CA files: small, but still disk I/O
        await asyncio.to_thread(
            k8s_config.load_incluster_config, client_configuration=configuration
        )
    return configuration


async def build_api_client(config: KubernetesConfig) -> Any:
    """An ``ApiClient``; its aiohttp session must be created inside the running loop."""
    try:
        configuration = await load_configuration(config)
    except (ConfigException, OSError) as exc:
        raise execution_error(
            ErrorCode.BACKEND_UNAVAILABLE,
            f"cannot load Kubernetes credentials: {exc}",
            auth=config.auth.mode,
        ) from exc
    return k8s.ApiClient(configuration)


def is_status(exc: BaseException, *codes: int) -> bool:
    return isinstance(exc, ApiException) and exc.status in codes


def api_failure(code: ErrorCode, exc: BaseException, action: str) -> AutoscorerError:
    status = getattr(exc, "status", None)
    return execution_error(
        code,
        f"Kubernetes API failed to {action}: {type(exc).__name__} "
        f"{status or ''} {getattr(exc, 'reason', '') or exc}".strip(),
        action=action,
        status=status,
    )


def is_unavailable(exc: ApiException) -> bool:
    return exc.status in (None, 0, 401, 403) or exc.status >= 500


@contextmanager
def api_errors(
    action: str, *, rejected: ErrorCode = ErrorCode.EXEC_ERROR, passthrough: tuple[int, ...] = ()
) -> Iterator[None]:
    """Classify what a block of API calls raises, at the one boundary every call goes through.

    Transport failures, timeouts, auth refusals and 5xx become BACKEND_UNAVAILABLE; statuses in
    ``passthrough`` stay ``ApiException`` for the caller; any other refusal (400, 422 ...)
    becomes ``rejected``.
    """
    try:
        yield
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise api_failure(ErrorCode.BACKEND_UNAVAILABLE, exc, action) from exc
    except ApiException as exc:
        if is_unavailable(exc):
            raise api_failure(ErrorCode.BACKEND_UNAVAILABLE, exc, action) from exc
        if exc.status in passthrough:
            raise
        raise api_failure(rejected, exc, action) from exc
