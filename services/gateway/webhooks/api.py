"""/v1/webhooks: subscribe per event type, list, delete, and read the delivery log."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.gateway.auth import PRINCIPAL, Principal
from services.gateway.context import GATEWAY
from services.gateway.http import api_error, ok
from services.gateway.webhooks.models import WEBHOOK_EVENT_TYPES, WebhookSubscription
from shared.errors import ErrorCode
from shared.urls import TargetUrl

ROUTES = web.RouteTableDef()
"""The routes of ``/v1/webhooks``: each handler is declared where it is defined."""

INVALID = ErrorCode.CONFIG_VALIDATION_ERROR
MAX_PER_OWNER = 50  # each subscription multiplies every event of the owner's jobs


class SubscribeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: TargetUrl  # parsed and checked now, so the dispatcher never meets a URL it cannot parse
    event_types: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=16)

    @field_validator("event_types")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(WEBHOOK_EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {list(WEBHOOK_EVENT_TYPES)}")
        return sorted(set(value))


def public(sub: WebhookSubscription, *, with_secret: bool = False) -> dict[str, Any]:
    return sub.model_dump(mode="json", exclude=None if with_secret else {"secret"})


async def _owned(request: web.Request) -> WebhookSubscription:
    principal: Principal = request[PRINCIPAL]
    sub_id = request.match_info["sub_id"]
    sub = await request.app[GATEWAY].hooks.get_subscription(sub_id)
    if sub is None or not (principal.is_admin or sub.owner == principal.subject):
        raise api_error(ErrorCode.NOT_FOUND, "no such webhook")  # the id is not echoed
    return sub


@ROUTES.post("/v1/webhooks")
async def subscribe(request: web.Request) -> web.Response:
    principal: Principal = request[PRINCIPAL]
    try:
        body = SubscribeRequest.model_validate(await request.json())
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise api_error(INVALID, "invalid webhook", errors=errors) from exc
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
        raise api_error(INVALID, "invalid webhook: the body is not a JSON object") from exc
    sub = WebhookSubscription(
        owner=principal.subject,
        owner_is_admin=principal.is_admin,
        url=body.url,
        event_types=body.event_types,
    )
    hooks = request.app[GATEWAY].hooks
    if len(await hooks.list_subscriptions(principal.subject)) >= MAX_PER_OWNER:
        raise api_error(
            ErrorCode.INVALID_STATE, f"at most {MAX_PER_OWNER} webhooks each; delete one first"
        )
    await hooks.add_subscription(sub)
    return ok(public(sub, with_secret=True), status=201)  # the only time the secret is shown


@ROUTES.get("/v1/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    principal: Principal = request[PRINCIPAL]
    owner = None if principal.is_admin else principal.subject
    subs = await request.app[GATEWAY].hooks.list_subscriptions(owner)
    return ok({"webhooks": [public(s) for s in subs]})


@ROUTES.get("/v1/webhooks/{sub_id}")
async def get_webhook(request: web.Request) -> web.Response:
    return ok(public(await _owned(request)))


@ROUTES.delete("/v1/webhooks/{sub_id}")
async def delete_webhook(request: web.Request) -> web.Response:
    sub = await _owned(request)
    await request.app[GATEWAY].hooks.delete_subscription(sub.id)
    return ok({"deleted": sub.id})


@ROUTES.get("/v1/webhooks/{sub_id}/deliveries")
async def deliveries(request: web.Request) -> web.Response:
    sub = await _owned(request)
    found = await request.app[GATEWAY].hooks.list_deliveries(sub.id)
    return ok({"deliveries": [d.model_dump(mode="json", exclude={"body"}) for d in found]})


def routes() -> list[web.AbstractRouteDef]:
    return list(ROUTES)
