"""The API's response envelope (design notes) and the one middleware that turns errors into it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from aiohttp import web

from shared.errors import AutoscorerError, ErrorCode, Fault, Stage, internal_error

log = logging.getLogger(__name__)

_STATUS: dict[ErrorCode, int] = {
    ErrorCode.AUTH_REQUIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.SCORER_NOT_FOUND: 404,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.UPLOAD_REJECTED: 400,
    ErrorCode.INTERNAL_ERROR: 500,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def http_status(error: AutoscorerError) -> int:
    if error.code in _STATUS:
        return _STATUS[error.code]
    if error.fault is Fault.PLATFORM:
        return 503 if error.retryable else 500
    return 400  # the request (or what it names) is wrong, whoever's fault the content is


def _meta() -> dict[str, Any]:
    return {"timestamp": datetime.now(UTC).isoformat(), "version": version("autoscorer")}


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response({"ok": True, "data": data, "meta": _meta()}, status=status)


def error_response(error: AutoscorerError) -> web.Response:
    body = {"ok": False, "error": error.to_info().model_dump(mode="json"), "meta": _meta()}
    return web.json_response(body, status=http_status(error))


def api_error(code: ErrorCode, message: str, **details: Any) -> AutoscorerError:
    return AutoscorerError(code, message, stage=Stage.VALIDATION, details=details)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AutoscorerError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = (
            ErrorCode.NOT_FOUND if exc.status in (404, 405) else ErrorCode.CONFIG_VALIDATION_ERROR
        )
        error = api_error(code, f"{exc.status} {exc.reason}", path=request.path)
        response = error_response(error)
        response.set_status(exc.status)
        return response
    except Exception as exc:  # the gateway's one boundary
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(internal_error(exc, stage=Stage.PLATFORM))
