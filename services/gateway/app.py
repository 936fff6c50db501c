"""The gateway's app factory: ``create_app(settings, store, bus, scorers, hooks, limits=)``."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from aiohttp import web

from services.gateway import health, jobs_api, openapi, queue_api, results_api, scorers_api
from services.gateway.auth import KeyRing, auth_middleware
from services.gateway.bodies import body_middleware
from services.gateway.catalogue import ScorerCatalogue
from services.gateway.context import GATEWAY, Gateway
from services.gateway.health import report_loops
from services.gateway.http import BoundedAccessLogger, error_middleware
from services.gateway.tracing import tracing_middleware
from services.gateway.webhooks import api as webhooks_api
from services.gateway.webhooks.store import WebhookStore
from shared.bus import EventBus
from shared.config import GatewaySettings
from shared.limits import SandboxLimits
from shared.metrics import Metrics
from shared.ops_http import METRICS
from shared.scoring import ScorerInfo
from shared.store import JobStore
from shared.supervise import Supervisor

MAX_REQUEST_LINE = 64 * 1024
"""bytes of the request line: room for every query parameter at its documented maximum length,
percent-encoded (a longer line is refused by aiohttp's parser, before any middleware)"""


def create_app(
    settings: GatewaySettings,
    store: JobStore,
    bus: EventBus,
    scorers: Iterable[ScorerInfo],
    hooks: WebhookStore,
    *,
    instance_id: str | None = None,
    limits: SandboxLimits | None = None,
    supervisor: Supervisor | None = None,
    scorer_time_limit: float = 600.0,
    metrics: Metrics | None = None,
) -> web.Application:
    """Routes, middlewares and shared state; opening the store and bus is the caller's job.

    ``scorers`` seed the gateway's catalogue until the scorer service announces its own
    (``autoscorer serve``: its scorer's; ``python -m services.gateway.main``: none).
    ``limits`` are the operator's caps (``Settings.limits``; default: their defaults), checked
    when a job is submitted. ``supervisor`` runs the gateway's background loops (default: a new
    one); the scorer watcher's loops start with the app and the app's cleanup closes it, with
    every loop it runs. /readyz reports its loops. ``scorer_time_limit`` (the scorer's) bounds
    how long /v1/scorers/test waits for a scorer replica's answer. GET /metrics exports
    ``metrics`` (default: a registry of this app's own), which watches the gateway's loops.
    """
    app = web.Application(
        middlewares=[
            tracing_middleware(),
            error_middleware,
            auth_middleware(KeyRing(settings)),
            body_middleware,
        ],
        client_max_size=settings.max_json_body_bytes,  # uploads stream past it, with their own
        handler_args={"max_line_size": MAX_REQUEST_LINE, "access_log_class": BoundedAccessLogger},
    )
    app[GATEWAY] = Gateway(
        settings,
        store,
        bus,
        ScorerCatalogue(scorers),
        hooks,
        instance_id or f"gateway-{uuid.uuid4().hex[:8]}",
        limits=limits or SandboxLimits(),
        scorer_time_limit=scorer_time_limit,
        supervisor=supervisor or Supervisor("gateway"),
    )
    report_loops(app, [app[GATEWAY].supervisor])
    app[METRICS] = metrics or Metrics()
    app[METRICS].watch_loops(app[GATEWAY].supervisor)
    app.cleanup_ctx.append(scorers_api.scorer_tests_ctx)
    app.cleanup_ctx.append(scorers_api.watches_ctx)
    for module in (health, jobs_api, queue_api, results_api, scorers_api, webhooks_api, openapi):
        app.add_routes(module.routes())
    return app
