"""Settings: one pydantic-settings root per process.

Sources, highest first: explicit init values, ``AUTOSCORER__*`` environment variables (``__``
nests: ``AUTOSCORER__EXECUTOR__DEFAULT_BACKEND=docker``), the YAML file named by
``AUTOSCORER_CONFIG`` or passed to :func:`load_settings`, then defaults. Nothing is read at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.limits import SandboxLimits

ENV_PREFIX = "AUTOSCORER__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScorerSettings(_Section):
    plugin_paths: list[Path] = Field(
        default_factory=list, description="files or folders of custom scorers loaded at start"
    )
    watch: bool = Field(False, description="reload plugin_paths when they change")
    time_limit: float = Field(600.0, gt=0, description="seconds one scoring may take")
    pool_size: int = Field(2, ge=1, le=64, description="scoring worker processes per replica")
    grace_s: float = Field(30.0, ge=0, description="on close: how long scoring may finish")
    plugin_dir: Path = Field(
        Path(".autoscorer/scorers"),
        description="where scorers loaded at run time (here or on another replica) are written",
    )
    replica_id: str | None = Field(
        None, description="this replica's name (stable: it names a queue); default host-pid"
    )
    queue_prefix: str = Field("", description="prepended to the service's queue names")


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


class SchedulerSettings(_Section):
    """The scheduler: where runs go, how long leases last, how often platform failures retry."""

    queue: str = Field("scheduler.jobs", min_length=1, description="the scheduler's bus queue")
    concurrency: int = Field(16, ge=1, description="events handled at once")
    backend_order: list[str] = Field(
        default_factory=lambda: ["kubernetes", "docker", "local"],
        description="executor backends by preference; a job goes to the first one enabled",
    )
    enabled_backends: list[str] = Field(
        default_factory=lambda: ["local"],
        min_length=1,
        description="backends with an executor service running (embedded mode: local)",
    )
    max_attempts: int = Field(3, ge=1, le=20, description="runs per job, platform retries included")
    lease_ttl_s: float = Field(60.0, gt=0, description="lease length when RunStarted gives none")
    lease_check_interval_s: float = Field(5.0, gt=0, description="how often expiries are checked")
    relay_interval_s: float = Field(2.0, gt=0, description="how often the outbox is swept")
    relay_batch: int = Field(100, ge=1, le=500, description="jobs the relay reads per sweep")
    submitted_wait_s: float = Field(
        300.0, gt=0, description="deadline of submitted: queue the job by then (else the reaper)"
    )
    queue_wait_s: float = Field(
        24 * 3600.0, gt=0, description="deadline of queued: longest wait for a run to start"
    )
    deadline_grace_s: float = Field(
        900.0,
        ge=0,
        description="added to the deadlines of running (time_limit + executor run_margin_s) and "
        "scoring (scorer.time_limit); it must cover a scorer queue's backlog",
    )
    deadline_resends: int = Field(
        1, ge=0, le=5, description="times the reaper sends an overdue request again before failing"
    )
    reaper_interval_s: float = Field(10.0, gt=0, description="how often deadlines are checked")


class ExecutorServiceSettings(_Section):
    """One executor service replica: which backend it serves and how it holds its runs."""

    backend: str = Field("local", description="the executor.backends alias this replica serves")
    concurrency: int = Field(2, ge=1, le=256, description="runs at once on this replica")
    heartbeat_s: float = Field(10.0, gt=0, description="RunHeartbeat period while a run goes")
    max_time_limit_s: int = Field(
        7 * 24 * 3600,
        gt=0,
        description="longest job time_limit accepted; the broker's consumer_timeout must "
        "exceed it plus run_margin_s",
    )
    run_margin_s: float = Field(
        600.0, gt=0, description="time a run may take beyond its time_limit (pull, start, stop)"
    )
    grace_s: float = Field(30.0, ge=0, description="on close: how long in-flight runs may finish")
    memo_size: int = Field(1024, ge=1, description="completed attempts remembered for dedupe")
    cleanup_on_start: bool = Field(
        True,
        description="remove the backend's leftover runs at start; turn off when replicas share "
        "an engine or cluster the backend cannot split by instance (kubernetes)",
    )
    replica_id: str | None = Field(
        None, description="this replica's name (stable: it names a queue); default host-pid"
    )
    queue_prefix: str = Field("", description="prepended to the service's queue names")


class BusSettings(_Section):
    kind: str = Field("memory", pattern="^(memory|rabbitmq)$")
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    exchange: str = "autoscorer.events"
    dead_letter_exchange: str = "autoscorer.dlx"
    publish_timeout_s: float = Field(
        30.0, gt=0, description="how long a publish waits (reconnects included) for a confirm"
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="one connection attempt")
    reconnect_interval_s: float = Field(1.0, gt=0, description="between reconnection attempts")
    delivery_limit: int = Field(
        20, ge=1, description="quorum redeliveries (crashes, consumer timeouts) before the DLQ"
    )
    drain_timeout_s: float = Field(
        30.0, ge=0, description="how long close() lets in-flight handlers finish"
    )
    start_within_s: float = Field(
        60.0,
        ge=0,
        description="how long a service keeps trying to reach the broker when it starts, with "
        "back-off, before it gives up (a broker restarting, or started after the services)",
    )


class StoreSettings(_Section):
    kind: str = Field("sqlite", pattern="^(sqlite|mongo)$")
    url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    database: str = "autoscorer"
    sqlite_path: Path = Path(".autoscorer/jobs.sqlite3")


class OpsHttpSettings(_Section):
    """The small HTTP port of the scheduler, the executor and the scorer (shared.ops_http):
    GET /metrics, /healthz and /readyz, without a key. Port 0 leaves it off (the default, so
    replicas sharing a host do not collide; the deploy files turn it on)."""

    host: str = Field("127.0.0.1", description="address the ops port binds (0.0.0.0 in a pod)")
    scheduler_port: int = Field(0, ge=0, le=65535, description="the scheduler's; e.g. 9101")
    executor_port: int = Field(0, ge=0, le=65535, description="an executor's; e.g. 9102")
    scorer_port: int = Field(0, ge=0, le=65535, description="a scorer's; e.g. 9103")


class ApiKey(_Section):
    key: SecretStr = Field(description="the bearer token (send as 'Authorization: Bearer KEY')")
    subject: str = Field(min_length=1, description="who this key belongs to; owns its jobs")
    role: Literal["submitter", "admin"] = "submitter"


class WebhookSettings(_Section):
    allow_private_targets: list[str] = Field(
        default_factory=list,
        description="hosts or CIDRs a webhook may reach although they are not global addresses",
    )
    timeout_s: float = Field(10.0, gt=0, description="per-attempt timeout")
    retry_delays_s: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0],
        description="delay before each retry (plus up to 20% jitter); attempts = len + 1",
    )
    callback_secret: SecretStr | None = Field(
        None, description="signs deliveries to per-job callback_url (unsigned when unset)"
    )


class RetentionSettings(_Section):
    """How long finished workspaces are kept (shared.retention; docs/API.md, "Retention")."""

    uploads_ttl_s: float | None = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="remove an uploaded workspace this long after its last activity (null: never)",
    )
    workspaces_ttl_s: float | None = Field(
        None,
        gt=0,
        description="remove a finished workspace named by path (an organiser's folder) this "
        "long after its last activity; null (the default): never",
    )
    interval_s: float = Field(600.0, gt=0, description="how often the gateway sweeps")


class GatewaySettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_root: Path = Field(Path("data"), description="workspaces named by submissions live here")
    api_keys: list[ApiKey] = Field(default_factory=list)
    insecure_no_auth: bool = Field(
        False, description="accept requests without a key, as an admin; development only"
    )
    max_upload_bytes: int = Field(512 * 1024 * 1024, gt=0)
    max_unpacked_bytes: int = Field(2 * 1024 * 1024 * 1024, gt=0)
    max_upload_files: int = Field(10_000, gt=0)
    max_json_body_bytes: int = Field(
        2 * 1024 * 1024, gt=0, description="largest JSON request body (every route but uploads)"
    )
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    webhook_queue: str = Field("gateway.webhooks", description="the dispatcher's bus queue")
    queue_run_slots: dict[str, PositiveInt] = Field(
        default_factory=dict,
        description="runs at once per backend alias across its executor replicas (replicas x "
        "executor_service.concurrency), for queued jobs' start estimates; 1 when not named",
    )
    retention: RetentionSettings = Field(default_factory=RetentionSettings)


class OtelSettings(_Section):
    enabled: bool = False
    service_name: str = "autoscorer"
    exporter: Literal["otlp", "console", "none"] = Field(
        "otlp",
        description="where spans go: otlp (to otlp_endpoint; nowhere while it is unset), "
        "console (one JSON object per span on stdout) or none (made, for log trace ids, "
        "not exported)",
    )
    otlp_endpoint: str | None = None


class LogSettings(_Section):
    """Process logs (shared.logs) and the per-job event log (shared.joblog)."""

    format: Literal["json", "text"] = Field(
        "text", description="json: one JSON object per line; text: readable lines"
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    job_log_max_bytes: int = Field(
        1024 * 1024,
        ge=4096,
        description="cap of a workspace's logs/job.jsonl; past it one truncation marker ends it",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    scorer: ScorerSettings = Field(default_factory=ScorerSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    executor_service: ExecutorServiceSettings = Field(default_factory=ExecutorServiceSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    limits: SandboxLimits = Field(
        default_factory=SandboxLimits,
        description="operator caps on what a job may ask for, and the sandbox's ulimits; "
        "every executor backend gets them (a backend's own 'limits' keys win)",
    )
    ops_http: OpsHttpSettings = Field(
        default_factory=OpsHttpSettings, description="metrics and probes (docs/OBSERVABILITY.md)"
    )

    @model_validator(mode="after")
    def _limits_reach_backends(self) -> Settings:
        """Give every executor backend config the operator's limits (shared.limits)."""
        base = self.limits.model_dump(mode="json")
        backends = {}
        for alias, config in self.executor.backends.items():
            own = config.get("limits") or {}
            merged = {**base, **own} if isinstance(own, dict) else own
            backends[alias] = {**config, "limits": merged}
        self.executor.backends = backends
        return self

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


def backend_config(settings: Settings, alias: str | None) -> dict[str, Any]:
    """The config of executor backend ``alias`` (default: ``executor.default_backend``)."""
    chosen = alias or settings.executor.default_backend
    configs = settings.executor.backends
    if chosen not in configs:
        raise AutoscorerError(
            ErrorCode.BACKEND_NOT_FOUND,
            f"no executor backend named {chosen!r}; configured: {', '.join(sorted(configs))}",
            stage=Stage.CONFIG,
            details={"backend": chosen, "configured": sorted(configs)},
        )
    return configs[chosen]


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
