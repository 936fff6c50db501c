"""Settings: one pydantic-settings root per process.

Sources, highest first: explicit init values, ``AUTOSCORER__*`` environment variables (``__``
nests: ``AUTOSCORER__EXECUTOR__DEFAULT_BACKEND=docker``), the YAML file named by
``AUTOSCORER_CONFIG`` or passed to :func:`load_settings`, then defaults. Nothing is read at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from shared.errors import AutoscorerError, ErrorCode, Stage

ENV_PREFIX = "AUTOSCORER__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScorerSettings(_Section):
    plugin_paths: list[Path] = Field(
        default_factory=list, description="files or folders of custom scorers loaded at start"
    )
    watch: bool = Field(False, description="reload plugin_paths when they change")
    time_limit: float = Field(600.0, gt=0, description="seconds one scoring may take")


def _default_backends() -> dict[str, dict[str, Any]]:
    return {
        "local": {"type": "local"},
        "docker": {"type": "docker"},
        "kubernetes": {"type": "kubernetes"},
    }


class ExecutorSettings(_Section):
    default_backend: str = Field("local", description="alias used when --backend is not given")
    backends: dict[str, dict[str, Any]] = Field(
        default_factory=_default_backends,
        description='alias -> dict config with a "type" key (local, docker, kubernetes)',
    )

    @field_validator("backends")
    @classmethod
    def _typed(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for alias, config in value.items():
            if "type" not in config:
                raise ValueError(f"backend {alias!r} has no 'type'")
        return value


class BusSettings(_Section):
    kind: str = Field("memory", pattern="^(memory|rabbitmq)$")
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    exchange: str = "autoscorer.events"
    prefetch: int = Field(8, ge=1)


class StoreSettings(_Section):
    kind: str = Field("sqlite", pattern="^(sqlite|mongo)$")
    url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    database: str = "autoscorer"
    sqlite_path: Path = Path(".autoscorer/jobs.sqlite3")


class OtelSettings(_Section):
    enabled: bool = False
    service_name: str = "autoscorer"
    otlp_endpoint: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    scorer: ScorerSettings = Field(default_factory=ScorerSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

    def redacted(self) -> dict[str, Any]:
        """A JSON-ready dump with every secret shown as ``**********``."""
        return self.model_dump(mode="json")


def _check_yaml(path: Path) -> None:
    if not path.is_file():
        raise AutoscorerError(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"config file {path} does not exist",
            stage=Stage.CONFIG,
            details={"path": str(path)},
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AutoscorerError(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"config file {path} is not valid YAML: {exc}",
            stage=Stage.CONFIG,
            details={"path": str(path)},
        ) from exc
    if data is not None and not isinstance(data, dict):
        raise AutoscorerError(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"config file {path} must hold a mapping at the top",
            stage=Stage.CONFIG,
            details={"path": str(path)},
        )


def load_settings(config_file: Path | None = None) -> Settings:
    """Read settings once (in ``main()``); every failure is CONFIG_VALIDATION_ERROR."""
    if config_file is not None:
        _check_yaml(config_file)

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    try:
        loaded = _FileSettings() if config_file is not None else Settings()
    except ValidationError as exc:
        raise AutoscorerError(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            "settings are invalid",
            stage=Stage.CONFIG,
            details={
                "errors": exc.errors(include_url=False, include_context=False, include_input=False)
            },
        ) from exc
    return loaded
