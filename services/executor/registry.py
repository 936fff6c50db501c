"""Backends chosen by alias with a dict config: ``{"type": "docker", ...}``.

Each backend module exposes ``BACKEND = BackendType(ConfigModel, factory)``. Only the chosen
backend's module is imported, so the local backend never imports aiodocker or kubernetes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from services.executor.base import Executor
from shared.errors import AutoscorerError, ErrorCode, Stage

BACKEND_MODULES: dict[str, str] = {
    "local": "services.executor.local",
    "docker": "services.executor.docker.backend",
    "kubernetes": "services.executor.kubernetes.backend",
}


@dataclass(frozen=True)
class BackendType:
    """A backend alias: its config model and how to build it from a validated config."""

    config_model: type[BaseModel]
    factory: Callable[[Any], Executor]


def backend_type(kind: object) -> BackendType:
    if not isinstance(kind, str) or kind not in BACKEND_MODULES:
        raise AutoscorerError(
            ErrorCode.BACKEND_NOT_FOUND,
            f"unknown executor backend {kind!r}; known: {', '.join(sorted(BACKEND_MODULES))}",
            stage=Stage.CONFIG,
            details={"type": kind, "known": sorted(BACKEND_MODULES)},
        )
    backend: BackendType = importlib.import_module(BACKEND_MODULES[kind]).BACKEND
    return backend


def validate_backend_config(config: Mapping[str, Any]) -> BaseModel:
    kind = config.get("type")
    body = {k: v for k, v in config.items() if k != "type"}
    try:
        return backend_type(kind).config_model.model_validate(body)
    except ValidationError as exc:
        raise AutoscorerError(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"invalid config for executor backend {kind!r}",
            stage=Stage.CONFIG,
            details={"errors": exc.errors(include_url=False, include_context=False)},
        ) from exc


def create_executor(config: Mapping[str, Any]) -> Executor:
    """Build the backend named by ``config["type"]``; never falls back to another backend."""
    validated = validate_backend_config(config)
    return backend_type(config["type"]).factory(validated)
