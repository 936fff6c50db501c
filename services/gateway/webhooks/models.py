"""Webhook subscriptions and deliveries, as stored."""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.jobs import now_ms

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

WEBHOOK_EVENT_TYPES = (
    "job.submitted",
    "run.completed",
    "score.completed",
    "job.failed",
    "job.cancelled",
)


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class WebhookSubscription(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: "wh_" + secrets.token_hex(8))
    owner: str
    owner_is_admin: bool = False
    url: str
    event_types: list[str]
    secret: str = Field(default_factory=new_secret, repr=False)
    created_at: datetime = Field(default_factory=now_ms)
    active: bool = True


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt of the schedule failed


class DeliveryAttempt(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: float


class Delivery(BaseModel):
    """One event for one target; its id is the ``webhook-id`` header, stable across retries."""

    id: str
    subscription_id: str | None  # None: the job's own callback_url
    url: str
    event_id: str
    event_type: str
    job_id: str | None
    body: dict[str, Any]
    tenant: str | None = None  # whose delivery (subscription owner, job submitter): fair share
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: list[DeliveryAttempt] = Field(default_factory=list)
    next_attempt_at: datetime = Field(default_factory=now_ms)
    claimed_until: datetime | None = None
    created_at: datetime = Field(default_factory=now_ms)


def delivery_id(target: str, event_id: str) -> str:
    """Deterministic, so a redelivered event never creates a second delivery."""
    return "msg_" + hashlib.sha256(f"{target}|{event_id}".encode()).hexdigest()[:24]


def readable(model: type[M], raw: str | bytes | dict[str, Any], what: str) -> M | None:
    """A stored row as ``model``, or None (logged, never raised) when it no longer parses: one
    unreadable row must not stop every delivery nor fail every listing."""
    try:
        if isinstance(raw, str | bytes):
            return model.model_validate_json(raw)
        return model.model_validate(raw)
    except ValidationError:
        log.warning("a stored %s is unreadable; set aside", what)  # no input: it holds secrets
        return None
