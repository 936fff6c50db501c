"""``/openapi.json``: an OpenAPI 3.1 document built from the app's own routes and models.

Paths come from the router, so a route cannot exist without being documented (a test checks it);
request and response bodies come from the pydantic models.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from shared.errors import ErrorInfo
from shared.jobs import Job
from shared.models import JobSpec, Result
from shared.scoring import ScorerInfo

DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("POST", "/v1/jobs"): "Submit a job: JSON naming a workspace under the data root, or a "
    "multipart upload (field 'archive': tar, tar.gz or zip of a workspace). Honours the "
    "Idempotency-Key header; a workspace with an active job returns that job.",
    ("GET", "/v1/jobs"): "List jobs, newest first: status (comma list), scorer, submitter "
    "(admins), created_from, created_to, cursor, limit.",
    ("GET", "/v1/jobs/{job_id}"): "One job with its status history.",
    ("GET", "/v1/jobs/{job_id}/result"): "The job's Result.",
    ("GET", "/v1/jobs/{job_id}/logs"): "The last lines (?tail=N) of the job's container log.",
    ("POST", "/v1/jobs/{job_id}/cancel"): "Ask for cancellation of an active job.",
    ("POST", "/v1/jobs/{job_id}/rescore"): "Score a finished job again.",
    ("GET", "/v1/scorers"): "Registered scorers with metadata and load errors.",
    ("POST", "/v1/scorers/load"): "Admin: load a scorer file ({filename, source}) everywhere.",
    ("POST", "/v1/scorers/reload"): "Admin: reload a scorer file everywhere.",
    ("POST", "/v1/scorers/test"): "Admin: score a workspace with a scorer without writing.",
    ("GET", "/v1/scorers/watch"): "Admin: watched scorer files.",
    ("POST", "/v1/scorers/watch"): "Admin: reload a loaded scorer file whenever it changes.",
    ("DELETE", "/v1/scorers/watch"): "Admin: stop watching (?filename=).",
    ("POST", "/v1/webhooks"): "Subscribe a URL to event types; the answer holds the signing "
    "secret (shown once).",
    ("GET", "/v1/webhooks"): "Your webhook subscriptions (admins: all).",
    ("GET", "/v1/webhooks/{sub_id}"): "One subscription.",
    ("DELETE", "/v1/webhooks/{sub_id}"): "Remove a subscription.",
    (
        "GET",
        "/v1/webhooks/{sub_id}/deliveries",
    ): "The delivery log: attempts, status codes, errors.",
    ("GET", "/healthz"): "The process answers.",
    ("GET", "/readyz"): "The bus and the store answer.",
    ("GET", "/openapi.json"): "This document.",
}

SCHEMAS: tuple[type[BaseModel], ...] = (JobSpec, Result, Job, ErrorInfo, ScorerInfo)


def _schemas(extra: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for model in (*SCHEMAS, *extra):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def _operation(method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": DESCRIPTIONS.get((method, path), ""),
        "responses": {
            "200": {"description": "success envelope {ok: true, data, meta}"},
            "default": {"description": "error envelope {ok: false, error: ErrorInfo, meta}"},
        },
    }
    params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
    if params:
        operation["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
    if path not in ("/healthz", "/readyz", "/openapi.json"):
        operation["security"] = [{"bearer": []}]
    return operation


def build_openapi(app: web.Application, extra: tuple[type[BaseModel], ...] = ()) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or route.method == "HEAD":
            continue
        paths.setdefault(path, {})[route.method.lower()] = _operation(route.method, path)
    return {
        "openapi": "3.1.0",
        "info": {"title": "AutoScorer gateway", "version": version("autoscorer")},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _schemas(extra),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app))


def routes() -> list[web.RouteDef]:
    return [web.get("/openapi.json", openapi)]
