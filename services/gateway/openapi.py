"""``/openapi.json``: an OpenAPI 3.1 document built from the app's own routes and models.

Paths come from the router, so a route cannot exist without being documented (a test checks it).
Each operation in :data:`OPERATIONS` says its request body (a pydantic model, or the upload form),
its query parameters and every status it answers; ``tests/faults/test_openapi_fuzz.py`` fuzzes the
gateway from this document and fails on any status it does not list, and on any 5xx.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from services.gateway.jobs_api import (
    MAX_JOB_ID,
    MAX_QUERY_VALUE,
    MAX_REASON,
    SubmitFields,
    SubmitRequest,
)
from services.gateway.queue_api import BackendQueueInfo, QueuePosition
from services.gateway.results_api import INLINE_TYPES
from services.gateway.scorers_api import LoadRequest, TestRequest, WatchRequest
from services.gateway.webhooks.api import SubscribeRequest
from shared.errors import ErrorInfo
from shared.jobs import Job, JobStatus
from shared.models import JobSpec, Result
from shared.scoring import ScorerInfo
from shared.store import MAX_PAGE

PUBLIC = ("/healthz", "/readyz", "/metrics", "/openapi.json")
REASONS = {
    200: "success",
    201: "created",
    202: "accepted",
    400: "the request is invalid (PARSE_ERROR, CONFIG_VALIDATION_ERROR, UPLOAD_REJECTED, ...)",
    401: "no valid API key (AUTH_REQUIRED)",
    403: "the key's role or subject may not do this (FORBIDDEN)",
    404: "no such job, scorer, file or subscription, or not yours (NOT_FOUND)",
    409: "the job's or workspace's state does not allow this (INVALID_STATE)",
    413: "the body is larger than this route accepts",
    415: "the body is neither application/json (UTF-8) nor, where accepted, multipart/form-data",
    422: "an Idempotency-Key was reused for a different request (IDEMPOTENCY_KEY_REUSED), or "
    "the job's spec asks for more than the operator's caps allow (RESOURCE_LIMIT_EXCEEDED)",
    503: "the store or bus is unavailable (retry later)",
}
JSON_ERRORS = (400, 413, 415)


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_TEXT = {"type": "string", "maxLength": MAX_QUERY_VALUE}
_DATE = {"type": "string", "format": "date-time", "maxLength": MAX_QUERY_VALUE}
_STATUSES = "|".join(s.value for s in JobStatus)
LIST_QUERY = [
    _q(
        "status",
        {"type": "string", "pattern": f"^({_STATUSES})(,({_STATUSES}))*$"},
        "comma list of job states",
    ),
    _q("scorer", _TEXT, "scorer name"),
    _q("submitter", _TEXT, "admins only: whose jobs"),
    _q("created_from", _DATE, "inclusive; ISO 8601, UTC when no zone is given"),
    _q("created_to", _DATE, "exclusive"),
    _q("cursor", _TEXT, "next_cursor of the previous page"),
    _q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size"),
]
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[!-~]{1,200}$"},
    "description": "same key and request: the first job again; another request: 422",
}
UPLOAD_FORM = {
    "type": "object",
    "required": ["archive"],
    "properties": {
        "archive": {
            "type": "string",
            "format": "binary",
            "description": "tar, tar.gz, tar.bz2, tar.xz or zip of a workspace",
        },
        "spec": {"type": "string", "description": "a JobSpec as JSON text"},
        "priority": {"type": "string", "pattern": "^[0-9]$"},
        "callback_url": {"type": "string", "maxLength": 2048},
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Op:
    summary: str
    statuses: tuple[int, ...]
    body: type[BaseModel] | None = None
    query: tuple[dict[str, Any], ...] = ()
    upload: bool = False
    headers: tuple[dict[str, Any], ...] = ()
    enveloped: bool = True  # False: the body is the document itself, not an envelope
    media: str = "application/json"  # of a 200 that is not enveloped
    files: tuple[str, ...] = ()  # media types of a 200 that is a file (errors stay enveloped)


_AUTH = (401, 503)
_ADMIN = (401, 403, 503)
OPERATIONS: dict[tuple[str, str], Op] = {
    ("POST", "/v1/jobs"): Op(
        "Submit a job: JSON naming a workspace under the data root, or a multipart upload "
        "(field 'archive'). One active job per workspace; Idempotency-Key replays return the "
        "first job; a spec beyond the operator's caps (memory, CPU, shm, time, GPUs) is 422.",
        (200, 202, 403, 409, 422, *JSON_ERRORS, *_AUTH),
        body=SubmitRequest,
        upload=True,
        headers=(IDEMPOTENCY_KEY,),
    ),
    ("GET", "/v1/jobs"): Op(
        "List jobs, newest first.", (200, 400, *_AUTH), query=tuple(LIST_QUERY)
    ),
    ("GET", "/v1/jobs/{job_id}"): Op(
        "One job with its status history; while queued, 'queue' (a QueuePosition): its place "
        "on its backend and an estimated start.",
        (200, 404, *_AUTH),
    ),
    ("GET", "/v1/jobs/{job_id}/result"): Op(
        "The job's Result (its newest; 'version' counts them).", (200, 404, *_AUTH)
    ),
    ("GET", "/v1/jobs/{job_id}/results"): Op(
        "Every version of the job's Result, newest first (a re-score adds one).",
        (200, 404, *_AUTH),
    ),
    ("GET", "/v1/jobs/{job_id}/report"): Op(
        "The job's report: one self-contained HTML page (score, metrics, plots, timing, "
        "resources, error, provenance); same access as the result.",
        (200, 404, *_AUTH),
        files=("text/html",),
    ),
    ("GET", "/v1/jobs/{job_id}/artifacts/{name}"): Op(
        "One artifact the result lists (e.g. a plot), by name, while its bytes match the "
        "result's sha256; same access as the result.",
        (200, 404, *_AUTH),
        files=(*sorted(INLINE_TYPES), "application/octet-stream"),
    ),
    ("GET", "/v1/jobs/{job_id}/logs"): Op(
        "The last lines of the job's container log.",
        (200, 400, 404, *_AUTH),
        query=(_q("tail", {"type": "integer", "minimum": 1, "maximum": 5000}, "lines"),),
    ),
    ("POST", "/v1/jobs/{job_id}/cancel"): Op(
        "Ask for cancellation of an active job.", (202, 404, 409, *JSON_ERRORS, *_AUTH)
    ),
    ("POST", "/v1/jobs/{job_id}/rescore"): Op(
        "Score a finished job again.",
        (202, 400, 404, 409, *JSON_ERRORS, *_AUTH),
        query=(_q("reason", {"type": "string", "maxLength": MAX_REASON}, "why"),),
    ),
    ("GET", "/v1/queue"): Op(
        "Admin: per backend, queued jobs (depth), the oldest queued job's age in seconds and "
        "running jobs.",
        (200, *_ADMIN),
    ),
    ("GET", "/v1/scorers"): Op("Registered scorers with metadata and load errors.", (200, *_AUTH)),
    ("POST", "/v1/scorers/load"): Op(
        "Admin: load a scorer file ({filename, source}) everywhere.",
        (200, *JSON_ERRORS, *_ADMIN),
        body=LoadRequest,
    ),
    ("POST", "/v1/scorers/reload"): Op(
        "Admin: reload a scorer file everywhere.", (200, *JSON_ERRORS, *_ADMIN), body=LoadRequest
    ),
    ("POST", "/v1/scorers/test"): Op(
        "Admin: score a workspace with a scorer without writing.",
        (200, 404, *JSON_ERRORS, *_ADMIN),
        body=TestRequest,
    ),
    ("GET", "/v1/scorers/watch"): Op("Admin: watched scorer files.", (200, *_ADMIN)),
    ("POST", "/v1/scorers/watch"): Op(
        "Admin: reload a loaded scorer file whenever it changes.",
        (200, 404, *JSON_ERRORS, *_ADMIN),
        body=WatchRequest,
    ),
    ("DELETE", "/v1/scorers/watch"): Op(
        "Admin: stop watching (?filename=).",
        (200, 404, *JSON_ERRORS, *_ADMIN),
        query=(_q("filename", _TEXT, "the watched file"),),
    ),
    ("POST", "/v1/webhooks"): Op(
        "Subscribe a URL to event types; the answer holds the signing secret (shown once).",
        (201, *JSON_ERRORS, *_AUTH),
        body=SubscribeRequest,
    ),
    ("GET", "/v1/webhooks"): Op("Your webhook subscriptions (admins: all).", (200, *_AUTH)),
    ("GET", "/v1/webhooks/{sub_id}"): Op("One subscription.", (200, 404, *_AUTH)),
    ("DELETE", "/v1/webhooks/{sub_id}"): Op(
        "Remove a subscription.", (200, 404, *JSON_ERRORS, *_AUTH)
    ),
    ("GET", "/v1/webhooks/{sub_id}/deliveries"): Op(
        "The delivery log: attempts, status codes, errors.", (200, 404, *_AUTH)
    ),
    ("GET", "/healthz"): Op("The process answers.", (200,)),
    ("GET", "/readyz"): Op("The bus and the store answer.", (200, 503)),
    ("GET", "/openapi.json"): Op("This document.", (200,), enveloped=False),
    ("GET", "/metrics"): Op(
        "Prometheus metrics, text format (docs/OBSERVABILITY.md); no key.",
        (200,),
        enveloped=False,
        media="text/plain",
    ),
}

SCHEMAS: tuple[type[BaseModel], ...] = (
    JobSpec,
    Result,
    Job,
    ErrorInfo,
    ScorerInfo,
    SubmitRequest,
    SubmitFields,
    LoadRequest,
    TestRequest,
    WatchRequest,
    SubscribeRequest,
    QueuePosition,
    BackendQueueInfo,
)
ENVELOPES = {
    "Success": {
        "type": "object",
        "required": ["ok", "data", "meta"],
        "properties": {"ok": {"const": True}, "data": {}, "meta": {"type": "object"}},
    },
    "Failure": {
        "type": "object",
        "required": ["ok", "error", "meta"],
        "properties": {
            "ok": {"const": False},
            "error": {"$ref": "#/components/schemas/ErrorInfo"},
            "meta": {"type": "object"},
        },
    },
}


def _schemas(extra: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    found: dict[str, Any] = dict(ENVELOPES)
    for model in (*SCHEMAS, *extra):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def _response(status: int, op: Op) -> dict[str, Any]:
    envelope = "Success" if status < 400 else "Failure"
    if op.files and status < 400:
        content = {
            m: {"schema": {} if m.endswith("json") else {"type": "string"}} for m in op.files
        }
        return {"description": REASONS[status], "content": content}
    if not op.enveloped and op.media != "application/json":
        text = {op.media: {"schema": {"type": "string"}}}
        return {"description": REASONS[status], "content": text}
    schema = {"$ref": f"#/components/schemas/{envelope}"} if op.enveloped else {"type": "object"}
    return {"description": REASONS[status], "content": {"application/json": {"schema": schema}}}


def _request_body(op: Op) -> dict[str, Any] | None:
    content: dict[str, Any] = {}
    if op.body is not None:
        ref = {"$ref": f"#/components/schemas/{op.body.__name__}"}
        content["application/json"] = {"schema": ref}
    if op.upload:
        content["multipart/form-data"] = {"schema": UPLOAD_FORM}
    return {"required": True, "content": content} if content else None


def _parameters(path: str, op: Op) -> list[dict[str, Any]]:
    names = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
    params = [
        {
            "name": n,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_JOB_ID},
        }
        for n in names
    ]
    return [*params, *op.query, *op.headers]


def _operation(method: str, path: str) -> dict[str, Any]:
    op = OPERATIONS.get((method, path), Op("", (200, 400, 401, 404, 503)))
    operation: dict[str, Any] = {
        "summary": op.summary,
        "responses": {str(s): _response(s, op) for s in sorted(set(op.statuses))},
    }
    if params := _parameters(path, op):
        operation["parameters"] = params
    if body := _request_body(op):
        operation["requestBody"] = body
    if path not in PUBLIC:
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
