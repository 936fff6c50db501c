"""Event contracts: one frozen pydantic model per event the services exchange.

Every event carries ``event_id`` (dedupe key), ``type`` (its routing key, except ``RunRequested``
which appends the backend alias), ``schema_version``, ``occurred_at`` and ``job_id``. Contracts
change only by adding optional fields; consumers ignore fields they do not know, so a newer
producer never breaks an older consumer. ``docs/events/`` holds the generated JSON Schemas and
AsyncAPI document (``scripts/gen_event_docs.py``); a snapshot test keeps them in step.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from shared.errors import AutoscorerError, ErrorCode, ErrorInfo, Fault, Stage
from shared.models import JobSpec, Result, RunOutcome, utcnow
from shared.scoring import ScorerInfo
from shared.urls import TargetUrl

SCHEMA_VERSION = 1

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN)]
BackendAlias = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="executor backend alias (no dots)"),
]
Url = TargetUrl  # parsed and checked when accepted (shared.urls.check_target_url)


# Defaulted in Python for convenience, but required on the wire: without its own event_id a
# redelivered message could not be recognised as a duplicate.
WIRE_REQUIRED = ("type", "event_id", "occurred_at")


def _wire_required(schema: dict[str, Any]) -> None:
    required = schema.setdefault("required", [])
    required[:0] = [name for name in WIRE_REQUIRED if name not in required]


def _spec_job_id(data: Any) -> Any:
    """``spec.job_id`` defaults to the event's ``job_id`` (the schema does not require it)."""
    spec = data.get("spec") if isinstance(data, dict) else None
    if isinstance(spec, dict) and "job_id" not in spec and "job_id" in data:
        return {**data, "spec": {**spec, "job_id": data["job_id"]}}
    return data


class BaseEvent(BaseModel):
    """Fields every event has. Unknown fields are ignored so contracts can grow."""

    model_config = ConfigDict(frozen=True, extra="ignore", json_schema_extra=_wire_required)

    type: str
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="unique; dedupe key")
    schema_version: int = Field(SCHEMA_VERSION, ge=1)
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    job_id: JobId

    @property
    def routing_key(self) -> str:
        """The AMQP routing key this event is published with; by default its ``type``."""
        return self.type


class JobSubmitted(BaseEvent):
    """A participant submission was accepted and stored; the scheduler takes it from here.

    ``spec.job_id`` may be left out (it defaults to ``job_id``); when given it must equal
    ``job_id``. A ``JobSubmitted`` the scheduler refuses (it breaks this schema, or the spec asks
    for more than the operator's caps) is answered with ``JobFailed`` for its ``job_id`` (when
    one can be read from it) and dead-lettered (docs/EVENTS.md, "Refused submissions")."""

    type: Literal["job.submitted"] = "job.submitted"
    spec: JobSpec
    workspace: str = Field(min_length=1, description="workspace location (path or URI)")
    submitter: str = Field(min_length=1)
    priority: int = Field(5, ge=0, le=9, description="0 lowest, 9 highest")
    idempotency_key: str | None = Field(None, max_length=256)
    callback_url: Url | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_spec_job_id(cls, data: Any) -> Any:
        return _spec_job_id(data)

    @model_validator(mode="after")
    def _same_job(self) -> Self:
        if self.spec.job_id != self.job_id:
            raise ValueError("job_id must equal spec.job_id")
        return self


class RunRequested(BaseEvent):
    """Run the participant program on one executor backend.

    Routing key ``run.requested.<backend>`` so each backend binds only to its own runs.
    """

    type: Literal["run.requested"] = "run.requested"
    backend: BackendAlias
    attempt: int = Field(1, ge=1)
    spec: JobSpec
    workspace: str = Field(min_length=1)

    @property
    def routing_key(self) -> str:
        return f"{self.type}.{self.backend}"

    @model_validator(mode="before")
    @classmethod
    def _default_spec_job_id(cls, data: Any) -> Any:
        return _spec_job_id(data)

    @model_validator(mode="after")
    def _same_job(self) -> Self:
        if self.spec.job_id != self.job_id:
            raise ValueError("job_id must equal spec.job_id")
        return self


class RunStarted(BaseEvent):
    """An executor instance started the run; it holds the job until ``RunCompleted``."""

    type: Literal["run.started"] = "run.started"
    backend: BackendAlias
    attempt: int = Field(1, ge=1)
    instance: str = Field(min_length=1, description="executor instance holding the run")
    lease_ttl_s: float | None = Field(
        None, gt=0, le=24 * 3600, description="lease length wanted; default: the scheduler's"
    )


class RunHeartbeat(BaseEvent):
    """The run is still going; sent periodically so the scheduler can renew the lease."""

    type: Literal["run.heartbeat"] = "run.heartbeat"
    backend: BackendAlias
    attempt: int = Field(1, ge=1)
    instance: str = Field(min_length=1)
    elapsed_s: float | None = Field(None, ge=0)
    lease_ttl_s: float | None = Field(
        None, gt=0, le=24 * 3600, description="lease length wanted; default: the scheduler's"
    )


class RunCompleted(BaseEvent):
    """A run finished (in any status). Platforms that ran inference themselves publish it too."""

    type: Literal["run.completed"] = "run.completed"
    outcome: RunOutcome
    attempt: int = Field(1, ge=1)
    workspace: str | None = Field(None, description="where the run's output/ now lives")

    @model_validator(mode="after")
    def _same_job(self) -> Self:
        if self.outcome.job_id != self.job_id:
            raise ValueError("job_id must equal outcome.job_id")
        return self


class ScoreRequested(BaseEvent):
    """Score a workspace whose output/ is complete."""

    type: Literal["score.requested"] = "score.requested"
    spec: JobSpec
    workspace: str = Field(min_length=1)
    attempt: int = Field(1, ge=1)
    submitter: str | None = Field(None, description="who submitted the job (provenance)")
    submitted_at: datetime | None = Field(None, description="the job's created_at (provenance)")

    @model_validator(mode="before")
    @classmethod
    def _default_spec_job_id(cls, data: Any) -> Any:
        return _spec_job_id(data)

    @model_validator(mode="after")
    def _same_job(self) -> Self:
        if self.spec.job_id != self.job_id:
            raise ValueError("job_id must equal spec.job_id")
        return self


class ScoreCompleted(BaseEvent):
    """Scoring finished; ``result.error`` is set when the submission could not be scored."""

    type: Literal["score.completed"] = "score.completed"
    result: Result
    scorer: str = Field(min_length=1)
    scorer_version: str = Field(min_length=1)


class JobFailed(BaseEvent):
    """The job ended without a score, for the reason in ``error``."""

    type: Literal["job.failed"] = "job.failed"
    error: ErrorInfo
    attempt: int | None = Field(None, ge=1)


class CancelRequested(BaseEvent):
    """Someone asked to cancel the job; whoever holds it stops it and emits ``JobCancelled``."""

    type: Literal["cancel.requested"] = "cancel.requested"
    requested_by: str = Field(min_length=1)
    reason: str | None = Field(None, max_length=1024)


class RescoreRequested(BaseEvent):
    """Score a finished job again (e.g. after a scorer fix); the scheduler moves it to scoring."""

    type: Literal["rescore.requested"] = "rescore.requested"
    requested_by: str = Field(min_length=1)
    reason: str | None = Field(None, max_length=1024)


class JobCancelled(BaseEvent):
    """The job was stopped and will not produce a score."""

    type: Literal["job.cancelled"] = "job.cancelled"
    reason: str | None = Field(None, max_length=1024)
    stage: Stage | None = Field(None, description="the stage the job was in when it stopped")


class ScorersChanged(BaseEvent):
    """A scorer was loaded, reloaded or removed on one replica; every replica applies it.

    Carries the scorer's source (``source``, at most 1 MB) or a reference to it (``source_ref``,
    e.g. a path on shared storage) plus ``sha256`` so replicas can skip what they already have.
    Not about one job: ``job_id`` is optional here.
    """

    type: Literal["scorers.changed"] = "scorers.changed"
    job_id: JobId | None = None  # type: ignore[assignment]
    action: Literal["loaded", "reloaded", "removed"]
    scorer: str = Field(min_length=1)
    scorer_version: str = Field(min_length=1)
    source: str | None = Field(None, max_length=1_000_000)
    source_ref: str | None = Field(None, max_length=2048)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    origin: str = Field(min_length=1, description="replica that made the change")

    @model_validator(mode="after")
    def _has_source(self) -> Self:
        if self.action != "removed" and self.source is None and self.source_ref is None:
            raise ValueError("a loaded or reloaded scorer needs source or source_ref")
        return self


ReplyTo = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
"""The asker's name in a reply's routing key (one routing-key word)."""


class ScorerTestRequested(BaseEvent):
    """Test-score a workspace once with a scorer, writing nothing (gateway's /v1/scorers/test).

    A scorer replica scores it in its pool, under its time limit, and answers
    ``ScorerTestCompleted`` to ``reply_to``. ``plugins`` lists the plugin files (absolute path,
    sha256) the asker knows, which the pool worker loads as it does a job's. Not about a job:
    ``job_id`` is optional here.
    """

    type: Literal["scorer.test.requested"] = "scorer.test.requested"
    job_id: JobId | None = None  # type: ignore[assignment]
    scorer: str = Field(min_length=1, max_length=128)
    workspace: str = Field(min_length=1, max_length=4096)
    plugins: list[tuple[str, str]] = Field(default_factory=list, max_length=1000)
    reply_to: ReplyTo


class ScorerTestCompleted(BaseEvent):
    """The result of a ScorerTestRequested, routed to the asker alone.

    ``request_id`` is the request's ``event_id``; the routing key is
    ``scorer.test.completed.<reply_to>``.
    """

    type: Literal["scorer.test.completed"] = "scorer.test.completed"
    job_id: JobId | None = None  # type: ignore[assignment]
    request_id: uuid.UUID
    reply_to: ReplyTo
    result: Result

    @property
    def routing_key(self) -> str:
        return f"{self.type}.{self.reply_to}"


class ScorerLoadRequested(BaseEvent):
    """Install a scorer file on the scorer service (the gateway's /v1/scorers/load and /reload,
    and a watched file that changed): the one way to install a scorer at run time.

    A scorer replica checks and loads it all-or-nothing (the file must import and register
    cleanly; a broken one keeps the last good version), passes it to every replica
    (``ScorersChanged``) and answers ``ScorerLoadCompleted`` to ``reply_to``. Not about a job:
    ``job_id`` is optional here.
    """

    type: Literal["scorer.load.requested"] = "scorer.load.requested"
    job_id: JobId | None = None  # type: ignore[assignment]
    filename: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}\.py$")
    source: str = Field(min_length=1, max_length=1_000_000)
    reply_to: ReplyTo


class ScorerLoadCompleted(BaseEvent):
    """The answer to a ScorerLoadRequested, routed to the asker alone
    (``scorer.load.completed.<reply_to>``): the scorers the file holds, or the load ``error``,
    and the replica's catalogue after it (as in ``ScorersAnnounced``)."""

    type: Literal["scorer.load.completed"] = "scorer.load.completed"
    job_id: JobId | None = None  # type: ignore[assignment]
    request_id: uuid.UUID
    reply_to: ReplyTo
    loaded: list[str] = Field(default_factory=list, max_length=1000)
    error: ErrorInfo | None = None
    scorers: list[ScorerInfo] = Field(default_factory=list, max_length=10_000)
    errors: dict[str, ErrorInfo] = Field(default_factory=dict)

    @property
    def routing_key(self) -> str:
        return f"{self.type}.{self.reply_to}"


class ScorersAnnounced(BaseEvent):
    """A scorer replica's catalogue: every scorer it runs (name, version, description, params
    schema, expected outputs, source sha256) and the scorer files that failed to load.

    Published when the replica starts, after every change of its scorers and at least every
    minute (a gateway that starts later learns it then); every gateway keeps the latest one and
    lists and checks submissions against it. Not about a job: ``job_id`` is optional here.
    """

    type: Literal["scorers.announced"] = "scorers.announced"
    job_id: JobId | None = None  # type: ignore[assignment]
    origin: str = Field(min_length=1, description="the replica that announces")
    scorers: list[ScorerInfo] = Field(default_factory=list, max_length=10_000)
    errors: dict[str, ErrorInfo] = Field(default_factory=dict)


class ScorersWanted(BaseEvent):
    """A gateway that just bound its announcement queue asks every scorer replica for its
    catalogue now (a ``ScorersAnnounced``) instead of at the next periodic announcement. Not
    about a job: ``job_id`` is optional here."""

    type: Literal["scorers.wanted"] = "scorers.wanted"
    job_id: JobId | None = None  # type: ignore[assignment]
    origin: str = Field(min_length=1, description="the asker")


EVENT_TYPES: tuple[type[BaseEvent], ...] = (
    JobSubmitted,
    RunRequested,
    RunStarted,
    RunHeartbeat,
    RunCompleted,
    ScoreRequested,
    ScoreCompleted,
    JobFailed,
    CancelRequested,
    JobCancelled,
    ScorersChanged,
    RescoreRequested,
    ScorerTestRequested,
    ScorerTestCompleted,
    ScorersAnnounced,
    ScorersWanted,
    ScorerLoadRequested,
    ScorerLoadCompleted,
)

Event = Annotated[
    JobSubmitted
    | RunRequested
    | RunStarted
    | RunHeartbeat
    | RunCompleted
    | ScoreRequested
    | ScoreCompleted
    | JobFailed
    | CancelRequested
    | JobCancelled
    | ScorersChanged
    | RescoreRequested
    | ScorerTestRequested
    | ScorerTestCompleted
    | ScorersAnnounced
    | ScorersWanted
    | ScorerLoadRequested
    | ScorerLoadCompleted,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
KNOWN_TYPES: frozenset[str] = frozenset(
    str(cls.model_fields["type"].default) for cls in EVENT_TYPES
)


EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:autoscorer:events")
"""The uuid5 namespace of derived event ids; never change it (ids would stop matching)."""


def derived_event_id(cause: str | uuid.UUID, kind: str) -> uuid.UUID:
    """The id of the event of ``kind`` that ``cause`` (an event id, or a key naming one step of
    a job such as ``<job>/attempt-2/end``) gives rise to: the same cause and kind always give the
    same id, so an event re-derived after a crash or a redelivery is a duplicate consumers drop,
    not a new event. ``kind`` tells apart several events derived from one cause."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{cause}\n{kind}")


def malformed_event(
    message: str, *, code: ErrorCode = ErrorCode.BAD_FORMAT, **details: Any
) -> AutoscorerError:
    """A body or stored payload that is no valid event: the platform's fault, not retryable
    (docs/ERRORS.md)."""
    return AutoscorerError(
        code, message, stage=Stage.PLATFORM, fault=Fault.PLATFORM, details=details
    )


def encode_event(event: BaseEvent) -> bytes:
    """The JSON body an event is published with."""
    return event.model_dump_json().encode()


def parse_event(body: bytes | str) -> Event:
    """Decode one event; junk raises ``AutoscorerError`` (PARSE_ERROR or BAD_FORMAT)."""
    data = _load_json(body)
    event_type = data.get("type")
    missing = [name for name in WIRE_REQUIRED if name not in data]
    if missing:
        raise malformed_event(
            f"event lacks required field(s) {', '.join(missing)}",
            event_type=event_type,
            missing=missing,
        )
    if event_type not in KNOWN_TYPES:
        raise malformed_event(
            f"unknown event type {event_type!r}",
            event_type=event_type,
            known=sorted(KNOWN_TYPES),
        )
    try:
        return EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise malformed_event(
            f"invalid {event_type} event: {exc.error_count()} error(s)",
            event_type=event_type,
            errors=_error_list(exc),
        ) from exc


def _load_json(body: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise malformed_event(
            f"event body is not JSON: {exc}",
            code=ErrorCode.PARSE_ERROR,
            size=len(body),
        ) from exc
    if not isinstance(data, dict):
        raise malformed_event(f"event body must be a JSON object, not {type(data).__name__}")
    return data


def _error_list(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"loc": ".".join(str(part) for part in err["loc"]), "msg": err["msg"]}
        for err in exc.errors(include_url=False)[:20]
    ]
